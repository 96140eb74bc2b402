//! The HTML of outgoing email, rewritten with `lol_html` (a real HTML tokenizer, not a
//! search for `href="`): click tracking of links and the open pixel.
//!
//! Only the `href` of real `<a>` elements is touched, however it is quoted or cased; an
//! `href` in a comment, in text, in a `data-href` or another attribute stays as it is.
//! Only `http:` and `https:` links are tracked: `mailto:`, `tel:`, `#anchors` and
//! relative links are left alone, and so is any link the caller declines (the
//! unsubscribe link).

use std::cell::Cell;
use std::rc::Rc;

use lol_html::html_content::ContentType;
use lol_html::{element, rewrite_str, RewriteStrSettings};

/// Why the HTML could not be rewritten.
#[derive(Debug, thiserror::Error)]
#[error("rewriting the HTML: {0}")]
pub struct HtmlError(String);

/// Rewrites the target of every `<a href>` whose URL is `http:` or `https:`: `track`
/// gets the URL as the reader's browser would (entities decoded, spaces trimmed) and
/// answers the new one, or `None` to keep the link as it is. The new URL is
/// attribute-escaped. `tail` (HTML) goes before `</body>`, or at the end when there is
/// no `</body>`.
pub fn rewrite(
    html: &str,
    mut track: impl FnMut(&str) -> Option<String>,
    tail: &str,
) -> Result<String, HtmlError> {
    let placed = Rc::new(Cell::new(false));
    let in_body = placed.clone();
    let body_tail = tail.to_string();
    let settings = RewriteStrSettings::new()
        .append_element_content_handler(element!("a[href]", |el| {
            let Some(raw) = el.get_attribute("href") else {
                return Ok(());
            };
            let url = decode_entities(raw.trim());
            if !is_web(&url) {
                return Ok(());
            }
            if let Some(new) = track(&url) {
                el.set_attribute("href", &new.replace('&', "&amp;"))?;
            }
            Ok(())
        }))
        .append_element_content_handler(element!("body", move |el| {
            let placed = in_body.clone();
            let tail = body_tail.clone();
            let on_end: lol_html::EndTagHandler<'static> = Box::new(move |end| {
                if !placed.get() {
                    end.before(&tail, ContentType::Html);
                    placed.set(true);
                }
                Ok(())
            });
            if let Some(handlers) = el.end_tag_handlers() {
                handlers.push(on_end);
            }
            Ok(())
        }));
    let mut out = rewrite_str(html, settings).map_err(|e| HtmlError(e.to_string()))?;
    if !placed.get() {
        out.push_str(tail);
    }
    Ok(out)
}

/// Whether a link is a web address (the only kind that is tracked).
fn is_web(url: &str) -> bool {
    let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
    lower.starts_with("http://") || lower.starts_with("https://")
}

/// An attribute value as the browser reads it: character references decoded (`&amp;`,
/// `&quot;`, `&#39;`, `&#x2F;`, ...). Unknown references stay as written.
pub fn decode_entities(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        let Some(end) = rest[1..].find(';').map(|e| e + 1).filter(|e| *e <= 10) else {
            out.push('&');
            rest = &rest[1..];
            continue;
        };
        let name = &rest[1..end];
        let c = match name {
            "amp" => Some('&'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "nbsp" => Some('\u{a0}'),
            _ => name
                .strip_prefix('#')
                .and_then(|n| match n.strip_prefix(['x', 'X']) {
                    Some(hex) => u32::from_str_radix(hex, 16).ok(),
                    None => n.parse().ok(),
                })
                .and_then(char::from_u32),
        };
        match c {
            Some(c) => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracked(html: &str) -> String {
        rewrite(
            html,
            |u| (u != "https://x.test/unsub").then(|| format!("https://t.test/c?u={u}")),
            "<i>px</i>",
        )
        .unwrap()
    }

    #[test]
    fn only_real_web_links_are_rewritten_however_they_are_written() {
        let html = concat!(
            "<html><body>",
            "<a href='https://x.test/single?a=1&amp;b=2'>single</a>",
            "<A HREF=\"HTTP://x.test/upper\">upper</A>",
            "<a href=https://x.test/bare>bare</a>",
            "<a href=\"  https://x.test/spaced  \">spaced</a>",
            "<!-- <a href=\"https://x.test/comment\">c</a> -->",
            "<p>write href=\"https://x.test/text\" in text</p>",
            "<div data-href=\"https://x.test/data\">d</div>",
            "<a data-href=\"https://x.test/data2\" title='href=\"https://x.test/title\"'>t</a>",
            "<a href=\"mailto:a@x.test\">m</a><a href=\"tel:+1\">t</a><a href=\"#top\">#</a>",
            "<a href=\"/relative\">r</a><a href=\"javascript:alert(1)\">j</a>",
            "<a href=\"https://x.test/unsub\">unsubscribe</a>",
            "<textarea><a href=\"https://x.test/rcdata\"></a></textarea>",
            "</body></html>",
        );
        let out = tracked(html);
        for rewritten in [
            "href=\"https://t.test/c?u=https://x.test/single?a=1&amp;b=2\"",
            "HREF=\"https://t.test/c?u=HTTP://x.test/upper\"",
            "href=\"https://t.test/c?u=https://x.test/bare\"",
            "href=\"https://t.test/c?u=https://x.test/spaced\"",
        ] {
            assert!(out.contains(rewritten), "{rewritten} in {out}");
        }
        for kept in [
            "<!-- <a href=\"https://x.test/comment\">c</a> -->",
            "<p>write href=\"https://x.test/text\" in text</p>",
            "data-href=\"https://x.test/data\"",
            "<a data-href=\"https://x.test/data2\" title='href=\"https://x.test/title\"'>t</a>",
            "<a href=\"mailto:a@x.test\">m</a><a href=\"tel:+1\">t</a><a href=\"#top\">#</a>",
            "<a href=\"/relative\">r</a><a href=\"javascript:alert(1)\">j</a>",
            "<a href=\"https://x.test/unsub\">unsubscribe</a>",
            "<textarea><a href=\"https://x.test/rcdata\"></a></textarea>",
        ] {
            assert!(out.contains(kept), "{kept} kept in {out}");
        }
        assert_eq!(out.matches("https://t.test/").count(), 4, "{out}");
        assert!(out.ends_with("<i>px</i></body></html>"), "{out}");
    }

    #[test]
    fn the_new_url_is_attribute_escaped() {
        let out = rewrite(
            "<a href=\"https://x.test/\">x</a>",
            |_| Some("https://t.test/\"><script>x</script>&q=1".into()),
            "",
        )
        .unwrap();
        assert_eq!(
            out,
            "<a href=\"https://t.test/&quot;><script>x</script>&amp;q=1\">x</a>"
        );
    }

    #[test]
    fn without_a_body_end_tag_the_tail_goes_at_the_end_once() {
        assert_eq!(tracked("<p>x</p>"), "<p>x</p><i>px</i>");
        assert_eq!(tracked("<body><p>x</p>"), "<body><p>x</p><i>px</i>");
        // A second `</body>` (in a comment or not) gets no second pixel.
        let out = tracked("<body>a</body><!-- </body> --></body>");
        assert_eq!(out.matches("<i>px</i>").count(), 1, "{out}");
    }

    #[test]
    fn entities_decode_like_a_browser_reads_them() {
        assert_eq!(
            decode_entities("a&amp;b&#39;c&#x2F;d&quot;&lt;&unknown;&"),
            "a&b'c/d\"<&unknown;&"
        );
        assert_eq!(decode_entities("&#xZZ;&#99999999;"), "&#xZZ;&#99999999;");
    }
}
