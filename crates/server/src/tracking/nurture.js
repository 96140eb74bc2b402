/* nurture website tracking (docs/operators.md, "Website tracking").
 *   <script src="https://NURTURE/t/nurture.js" async></script>
 * records nothing until the site calls nurture.consent(); with data-consent="implied"
 * on the tag it records without asking. nurture.revoke() deletes the cookie and stops. */
(function () {
  "use strict";
  var tag = document.currentScript;
  if (!tag || window.nurture) return;
  var base = new URL(tag.src).origin;
  var COOKIE = "nurture_aid";
  var FIELD = "nurture_anonymous_id";
  var MAX_AGE = 400 * 24 * 3600; // about 13 months
  var revoked = false;

  function read() {
    var m = document.cookie.match(/(?:^|;\s*)nurture_aid=([A-Za-z0-9_-]{16,64})(?:;|$)/);
    return m ? m[1] : null;
  }
  function write(value, maxAge) {
    var c = COOKIE + "=" + value + "; Path=/; Max-Age=" + maxAge + "; SameSite=Lax";
    if (location.protocol === "https:") c += "; Secure";
    document.cookie = c;
  }
  function fresh() {
    var b = new Uint8Array(16);
    crypto.getRandomValues(b);
    var s = "";
    for (var i = 0; i < b.length; i++) s += (b[i] + 256).toString(16).slice(1);
    return s;
  }
  function send(id) {
    var body = JSON.stringify({
      aid: id,
      url: location.href.slice(0, 2048),
      title: (document.title || "").slice(0, 512),
      referrer: (document.referrer || "").slice(0, 2048)
    });
    var url = base + "/t/p";
    // text/plain: a simple request, no CORS preflight.
    if (navigator.sendBeacon && navigator.sendBeacon(url, new Blob([body], { type: "text/plain" }))) return;
    fetch(url, {
      method: "POST", body: body, keepalive: true, mode: "cors", credentials: "omit",
      headers: { "Content-Type": "text/plain" }
    }).catch(function () {});
  }
  // Forms posted to this nurture server's hosted forms (/f/...) carry the visitor's id,
  // so the submission merges the visits into the contact.
  function tagForms(id) {
    var forms = document.querySelectorAll("form");
    for (var i = 0; i < forms.length; i++) {
      var f = forms[i], u;
      try { u = new URL(f.getAttribute("action") || "", location.href); } catch (e) { continue; }
      if (u.origin !== base || u.pathname.indexOf("/f/") !== 0) continue;
      var input = f.querySelector("input[name=" + FIELD + "]");
      if (!id) { if (input) input.parentNode.removeChild(input); continue; }
      if (!input) {
        input = document.createElement("input");
        input.type = "hidden";
        input.name = FIELD;
        f.appendChild(input);
      }
      input.value = id;
    }
  }
  function record() {
    var id = read();
    if (!id || revoked) return;
    send(id);
    tagForms(id);
  }
  window.nurture = {
    consent: function () {
      revoked = false;
      write(read() || fresh(), MAX_AGE);
      record();
    },
    revoke: function () {
      revoked = true;
      write("", 0);
      tagForms(null);
    },
    id: function () { return revoked ? null : read(); }
  };
  if (tag.getAttribute("data-consent") === "implied" && !read()) write(fresh(), MAX_AGE);
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", record);
  else record();
})();
