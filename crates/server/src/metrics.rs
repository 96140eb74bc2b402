//! `GET /metrics`: the process's Prometheus metrics ([`nurture_engine::metrics`]), in
//! the OpenMetrics text format, behind the API key like `/v1`. The store's gauges
//! (queued events, due timers and the oldest one's lag, outbox entries by state, workers
//! alive) are read at scrape time within [`STORE_WAIT`]; when the store does not answer
//! in time the scrape still answers with the counters, and counts a
//! `nurture_scrape_store_errors_total`.

use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use chrono::Utc;

use crate::AppState;

/// The longest a scrape waits for the store's counts.
pub const STORE_WAIT: Duration = Duration::from_secs(2);

/// The content type of the answer.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// `GET /metrics`.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    operation_id = "metrics",
    summary = "Prometheus metrics",
    description = "The process's metrics in the Prometheus text format, with the API key.",
    responses(
        (status = 200, description = "The metrics", content_type = "text/plain; version=0.0.4; charset=utf-8", body = String)
    )
)]
/// (The key and its scope `reports:read` are checked before, as for `/v1`.)
pub(crate) async fn scrape(State(s): State<AppState>) -> Response {
    let m = &s.engine.metrics;
    let store = &s.engine.store;
    let read = async {
        let q = store.queue_summary(Utc::now()).await?;
        let workers = store.workers().await?;
        Ok::<_, nurture_store::StoreError>((q, workers.len()))
    };
    match tokio::time::timeout(STORE_WAIT, read).await {
        Ok(Ok((q, workers))) => {
            m.queued_events.set(q.queued_events);
            m.due_timers.set(q.due_timers);
            let lag = match q.oldest_due {
                Some(t) if q.due_timers > 0 => {
                    (Utc::now() - t).num_milliseconds().max(0) as f64 / 1000.0
                }
                _ => 0.0,
            };
            m.oldest_due_timer_lag.set(lag);
            for state in nurture_store::ops::OPEN_OUTBOX_STATES {
                let n = q.outbox.get(state.as_str()).copied().unwrap_or(0);
                m.outbox_entries
                    .get_or_create(&nurture_engine::metrics::StateLabel {
                        state: state.as_str().to_string(),
                    })
                    .set(n);
            }
            // A store without a registry (SQLite) has this one process.
            m.workers_alive.set(workers.max(1) as i64);
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "metrics: the store's counts could not be read");
            m.scrape_store_errors.inc();
        }
        Err(_) => {
            tracing::warn!("metrics: the store's counts took over 2 s");
            m.scrape_store_errors.inc();
        }
    }
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], m.encode()).into_response()
}
