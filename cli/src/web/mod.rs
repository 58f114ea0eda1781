//! `bark web`: every room on one page, and the same as a JSON API
//! (docs/API.md). The node table is a [`rooms::Directory`] (status
//! packets heard on the group, and nodes advertised with DNS-SD); commands go out through
//! [`crate::rooms::command_node`] on a blocking thread; live updates are a
//! server-sent event stream (`/api/events`). An HTTP server crate (axum,
//! on a single-threaded tokio runtime) because none of this is what Bark
//! exists for: a separate process, never inside the audio server.

use crate::cli::WebArgs;
use crate::rooms::{self, Sent};
use crate::stats::model::NodeView;
use anyhow::{anyhow, bail, Context, Result};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bark_core::auth::Key;
use bark_core::command::{
    AckResult, Controller, Label, Settings, MAX_VOLUME, SET_DELAY, SET_ENABLED, SET_MUTE, SET_NAME,
    SET_PRIORITY, SET_STREAM, SET_VOLUME,
};
use serde::Deserialize;
use serde_json::json;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The page: one self-contained file (no CDN, no build step).
const PAGE: &str = include_str!("page.html");
/// How often the event stream sends the state, ms.
const EVENT_PERIOD_MS: u64 = 500;
/// How long a command waits for its ack (four tries), ms.
const ACK_TIMEOUT_MS: u64 = 1000;

struct App {
    collector: rooms::Directory,
    controller: Mutex<Controller>,
    /// `Authorization: Bearer` value commands need (hex), with a key.
    token: Option<String>,
    /// `Host` values accepted (empty: any). Listening on loopback, only
    /// its own names: a web page elsewhere that rebinds its DNS name to
    /// 127.0.0.1 is refused (DNS rebinding).
    hosts: Vec<String>,
}

type Shared = Arc<App>;

/// A change to a node, as the API takes it (every field optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Change {
    /// Volume, percent (0..=150).
    pub volume_pct: Option<f64>,
    /// Mute.
    pub mute: Option<bool>,
    /// Delay offset, ms (±2000).
    pub delay_ms: Option<f64>,
    /// Room name.
    pub name: Option<String>,
    /// Stream to follow ("" or "*": the best one).
    pub stream: Option<String>,
    /// On or off.
    pub enabled: Option<bool>,
    /// Sender priority.
    pub priority: Option<i8>,
    /// Which of the stream's channels a receiver plays: "all", "mono" or
    /// positions ("[ FL ]", "RL,RR").
    pub channels: Option<String>,
}

impl Change {
    /// The command's mask and values.
    ///
    /// # Errors
    /// A value out of range, saying which.
    pub fn to_command(&self) -> Result<(u16, Settings)> {
        let mut s = Settings::default();
        let mut mask = 0;
        if let Some(v) = self.volume_pct {
            if !(v.is_finite() && (0.0..=f64::from(MAX_VOLUME) * 100.0).contains(&v)) {
                bail!("volume_pct must be within 0..=150");
            }
            s.volume = (v / 100.0) as f32;
            mask |= SET_VOLUME;
        }
        if let Some(m) = self.mute {
            s.mute = m;
            mask |= SET_MUTE;
        }
        if let Some(d) = self.delay_ms {
            if !(d.is_finite() && d.abs() <= 2000.0) {
                bail!("delay_ms must be within -2000..=2000");
            }
            s.delay_ns = (d * 1e6).round() as i64;
            mask |= SET_DELAY;
        }
        if let Some(n) = &self.name {
            if n.trim().is_empty() || n.len() > bark_core::protocol::MAX_STRING {
                bail!("name must be 1 to 63 bytes");
            }
            s.name = Label::new(n.trim());
            mask |= SET_NAME;
        }
        if let Some(st) = &self.stream {
            if st.len() > bark_core::protocol::MAX_STRING {
                bail!("stream must be at most 63 bytes");
            }
            s.stream = Label::new(if st == "*" { "" } else { st });
            mask |= SET_STREAM;
        }
        if let Some(e) = self.enabled {
            s.enabled = e;
            mask |= SET_ENABLED;
        }
        if let Some(p) = self.priority {
            s.priority = p;
            mask |= SET_PRIORITY;
        }
        if let Some(c) = &self.channels {
            s.channels =
                bark_core::channels::Selection::parse(c).map_err(|e| anyhow!("channels: {e}"))?;
            mask |= bark_core::command::SET_CHANNELS;
        }
        Ok((mask, s))
    }
}

fn error(code: StatusCode, msg: impl Into<String>) -> Response {
    (code, Json(json!({ "error": msg.into() }))).into_response()
}

/// Whether `h` carries the token (always, without a key).
fn authorized(app: &App, h: &HeaderMap) -> bool {
    let Some(want) = &app.token else {
        return true;
    };
    let got = h
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    // Constant-time enough for a 64-character hex string compared once
    // per request: a length check, then every byte.
    got.len() == want.len()
        && got
            .bytes()
            .zip(want.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// Why a request may not go on, if it may not: a `Host` that is not ours
/// (DNS rebinding), or a change (`POST`) from a page of another origin.
fn foreign(app: &App, h: &HeaderMap, post: bool) -> Option<&'static str> {
    let host = h.get("host").and_then(|v| v.to_str().ok()).unwrap_or("");
    if !app.hosts.is_empty() && !app.hosts.iter().any(|a| a == host) {
        return Some("this server answers only to its own address (Host)");
    }
    if post {
        if let Some(origin) = h.get("origin").and_then(|v| v.to_str().ok()) {
            if origin.strip_prefix("http://") != Some(host) {
                return Some("changes come only from this server's own page (Origin)");
            }
        }
    }
    None
}

async fn same_site(
    State(app): State<Shared>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let post = req.method() == axum::http::Method::POST;
    match foreign(&app, req.headers(), post) {
        Some(why) => error(StatusCode::FORBIDDEN, why),
        None => next.run(req).await,
    }
}

fn state_json(app: &App) -> serde_json::Value {
    let snap = app.collector.snapshot();
    let zones = rooms::zones(&snap.nodes);
    json!({
        "time_unix_s": snap.time_unix_s,
        "group": snap.group,
        "auth_dropped": snap.auth_dropped,
        "nodes": snap.nodes,
        "zones": zones,
        "token_required": app.token.is_some(),
    })
}

async fn page() -> Html<&'static str> {
    Html(PAGE)
}

async fn nodes(State(app): State<Shared>) -> Response {
    Json(state_json(&app)["nodes"].clone()).into_response()
}

async fn zones(State(app): State<Shared>) -> Response {
    Json(state_json(&app)["zones"].clone()).into_response()
}

async fn events(
    State(app): State<Shared>,
) -> Sse<impl futures_util::Stream<Item = Result<Event, Infallible>>> {
    // The first state at once, then one every EVENT_PERIOD_MS: "last
    // heard" and the sync errors change all the time anyway.
    let stream = futures_util::stream::unfold((app, true), |(app, first)| async move {
        if !first {
            tokio::time::sleep(Duration::from_millis(EVENT_PERIOD_MS)).await;
        }
        let ev = Event::default()
            .event("state")
            .data(state_json(&app).to_string());
        Some((Ok(ev), (app, false)))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// Outcome of one command as JSON, with the HTTP status it deserves.
fn outcome(node: &NodeView, sent: &Sent) -> (StatusCode, serde_json::Value) {
    match sent {
        Sent::Acked(ack, rtt) => {
            let to = node
                .control
                .as_ref()
                .map(|c| c.command_addr.clone())
                .unwrap_or_default();
            let body = json!({
                "node_id": node.node_id,
                "result": format!("{:?}", ack.result).to_lowercase(),
                "ack_ms": rtt.as_secs_f64() * 1e3,
                "settings": rooms::ack_view(ack, &to),
            });
            let code = match ack.result {
                AckResult::Applied | AckResult::Repeated => StatusCode::OK,
                AckResult::Invalid | AckResult::WrongNode => StatusCode::UNPROCESSABLE_ENTITY,
            };
            (code, body)
        }
        Sent::NoAck(to) => (
            StatusCode::GATEWAY_TIMEOUT,
            json!({ "node_id": node.node_id, "error": format!("no ack from {to} (a key mismatch?)") }),
        ),
        Sent::NoSocket => (
            StatusCode::CONFLICT,
            json!({ "node_id": node.node_id, "error": "the node has no command socket" }),
        ),
    }
}

/// A change request's command, if its token is right and its values are
/// in range; else the answer to give.
fn admit(
    app: &App,
    headers: &HeaderMap,
    change: &Change,
) -> Result<(u16, Settings), (StatusCode, String)> {
    if !authorized(app, headers) {
        return Err((
            StatusCode::UNAUTHORIZED,
            "commands need the token bark web printed (Authorization: Bearer TOKEN)".into(),
        ));
    }
    change
        .to_command()
        .map_err(|e| (StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))
}

/// Runs `job` (commands: blocking socket waits) off the runtime's thread
/// and answers with its status and body.
async fn blocking(
    job: impl FnOnce() -> Result<(StatusCode, serde_json::Value)> + Send + 'static,
) -> Response {
    match tokio::task::spawn_blocking(job).await {
        Ok(Ok((code, body))) => (code, Json(body)).into_response(),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn set_node(
    State(app): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Json(change): Json<Change>,
) -> Response {
    let (mask, settings) = match admit(&app, &headers, &change) {
        Ok(c) => c,
        Err((code, why)) => return error(code, why),
    };
    let snap = app.collector.snapshot();
    let Some(node) = snap
        .nodes
        .iter()
        .find(|n| n.node_id == id.to_lowercase())
        .cloned()
    else {
        return error(StatusCode::NOT_FOUND, format!("no node {id} heard"));
    };
    let app2 = Arc::clone(&app);
    blocking(move || {
        let mut ctl = app2.controller.lock().unwrap_or_else(|p| p.into_inner());
        rooms::command_node(
            &mut ctl,
            &node,
            mask,
            &settings,
            Duration::from_millis(ACK_TIMEOUT_MS),
        )
        .map(|sent| outcome(&node, &sent))
    })
    .await
}

async fn set_zone(
    State(app): State<Shared>,
    Path(name): Path<String>,
    headers: HeaderMap,
    Json(change): Json<Change>,
) -> Response {
    let (mask, settings) = match admit(&app, &headers, &change) {
        Ok(c) => c,
        Err((code, why)) => return error(code, why),
    };
    if mask & !(SET_VOLUME | SET_MUTE) != 0 {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "a zone takes volume_pct and mute only",
        );
    }
    let snap = app.collector.snapshot();
    let Some(zone) = rooms::zones(&snap.nodes)
        .into_iter()
        .find(|z| z.name == name)
    else {
        return error(StatusCode::NOT_FOUND, format!("no zone {name}"));
    };
    let app2 = Arc::clone(&app);
    blocking(move || {
        let mut ctl = app2.controller.lock().unwrap_or_else(|p| p.into_inner());
        let results = rooms::apply_zone(
            &mut ctl,
            &snap.nodes,
            &zone,
            mask,
            &settings,
            Duration::from_millis(ACK_TIMEOUT_MS),
        )?;
        let mut worst = StatusCode::OK;
        let mut out = Vec::new();
        for (id, sent) in &results {
            if let Some(n) = snap.nodes.iter().find(|n| &n.node_id == id) {
                let (code, body) = outcome(n, sent);
                if code != StatusCode::OK {
                    worst = code;
                }
                out.push(body);
            }
        }
        Ok((worst, json!({ "zone": zone.name, "members": out })))
    })
    .await
}

/// The API's routes (also for tests).
fn router(app: Shared) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/api/nodes", get(nodes))
        .route("/api/nodes/{id}", post(set_node))
        .route("/api/zones", get(zones))
        .route("/api/zones/{name}", post(set_zone))
        .route("/api/events", get(events))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&app),
            same_site,
        ))
        .with_state(app)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Runs `bark web`.
///
/// # Errors
/// A non-loopback address without --key-file or --open; socket set-up.
pub fn run(a: &WebArgs) -> Result<()> {
    let auth = crate::keyed::Auth::new(a.key.key_file.as_deref(), false)?;
    if !a.listen.ip().is_loopback() && auth.key().is_none() && !a.open {
        bail!(
            "--listen {}: not a loopback address: give --key-file (commands then need a token) or --open (anyone who reaches it controls every room)",
            a.listen
        );
    }
    let collector = rooms::Directory::start(&a.net, &a.key)?;
    let token = auth.key().map(|k: &Key| hex(&k.web_token()));
    let controller = Controller::new(bark_io::node::random_nonzero_u64(), auth.key())
        .map_err(|e| anyhow!("{e}"))?;
    let hosts = if a.listen.ip().is_loopback() {
        let p = a.listen.port();
        vec![
            format!("127.0.0.1:{p}"),
            format!("localhost:{p}"),
            format!("[::1]:{p}"),
        ]
    } else {
        Vec::new()
    };
    let app = Arc::new(App {
        collector,
        controller: Mutex::new(controller),
        token: token.clone(),
        hosts,
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the HTTP runtime")?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(a.listen)
            .await
            .with_context(|| format!("--listen {}", a.listen))?;
        let bound = listener.local_addr()?;
        // Tests and scripts read the address from here when asking for :0.
        match &token {
            Some(t) => eprintln!("bark web: serving on http://{bound}/?token={t}"),
            None => eprintln!("bark web: serving on http://{bound}/"),
        }
        let stop = async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("SIGTERM handler");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        };
        axum::serve(listener, router(app))
            .with_graceful_shutdown(stop)
            .await
            .context("serving HTTP")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_become_commands_and_bad_values_are_refused() {
        let c = Change {
            volume_pct: Some(40.0),
            mute: Some(true),
            name: Some("Kitchen".into()),
            ..Change::default()
        };
        let (mask, s) = c.to_command().unwrap();
        assert_eq!(mask, SET_VOLUME | SET_MUTE | SET_NAME);
        assert!((s.volume - 0.4).abs() < 1e-6 && s.mute);
        for bad in [
            Change {
                volume_pct: Some(151.0),
                ..Change::default()
            },
            Change {
                delay_ms: Some(f64::NAN),
                ..Change::default()
            },
            Change {
                name: Some(" ".into()),
                ..Change::default()
            },
        ] {
            assert!(bad.to_command().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_token_is_checked_when_there_is_one() {
        let key = Key::from_bytes([3; 32]);
        let token = hex(&key.web_token());
        let app = App {
            collector: rooms::Directory::idle(),
            controller: Mutex::new(Controller::new(1, None).unwrap()),
            token: Some(token.clone()),
            hosts: vec!["127.0.0.1:9531".into()],
        };
        let mut h = HeaderMap::new();
        assert!(!authorized(&app, &h));
        h.insert("authorization", format!("Bearer {token}").parse().unwrap());
        assert!(authorized(&app, &h));
        h.insert("authorization", "Bearer 00".parse().unwrap());
        assert!(!authorized(&app, &h));
        // Only our own Host; changes only from our own page.
        assert!(foreign(&app, &h, false).is_some(), "no Host");
        h.insert("host", "127.0.0.1:9531".parse().unwrap());
        assert!(foreign(&app, &h, true).is_none());
        h.insert("origin", "http://evil.example".parse().unwrap());
        assert!(foreign(&app, &h, true).is_some());
        assert!(foreign(&app, &h, false).is_none());
        h.insert("origin", "http://127.0.0.1:9531".parse().unwrap());
        assert!(foreign(&app, &h, true).is_none());
        h.insert("host", "evil.example:9531".parse().unwrap());
        assert!(foreign(&app, &h, false).is_some());
    }
}
