//! The HTTP API (JSON) and the dashboard, over TLS with the server's
//! certificate. Every route needs the admin token: `Authorization: Bearer
//! TOKEN`, or the `kestrel_admin` cookie that the dashboard's login form
//! (or `/?token=TOKEN`) sets.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::{Form, Path, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::fleet::{now_ms, Fleet};
use crate::store::CommandRow;

/// What the HTTP handlers share.
pub struct Api {
    /// The fleet.
    pub fleet: Arc<Fleet>,
    /// SHA-256 of the admin token.
    pub admin_sha256: String,
}

/// Command kinds agents understand.
pub const KINDS: [&str; 4] = ["inventory", "scan-rootkit", "restart", "config"];

/// The router.
pub fn router(api: Arc<Api>) -> Router {
    Router::new()
        .route("/", get(dashboard))
        .route("/agents/{id}", get(agent_page))
        .route("/agents/{id}/command", post(command_form))
        .route("/api/summary", get(summary))
        .route("/api/agents", get(agents))
        .route("/api/agents/{id}", get(agent))
        .route("/api/agents/{id}/commands", post(command))
        .route("/api/agents/{id}/revoke", post(revoke))
        .route("/api/commands", post(broadcast))
        .route("/api/commands/{id}", get(command_status))
        .route("/api/batches/{id}", get(batch))
        .layer(axum::middleware::from_fn_with_state(api.clone(), auth))
        .with_state(api)
}

fn cookie_token(h: &HeaderMap) -> Option<String> {
    h.get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| kv.trim().strip_prefix("kestrel_admin=").map(String::from))
}

fn query_token(q: Option<&str>) -> Option<String> {
    q?.split('&')
        .find_map(|kv| kv.strip_prefix("token=").map(|t| t.replace("%2B", "+")))
}

async fn auth(State(api): State<Arc<Api>>, req: Request, next: Next) -> Response {
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|s| s.trim().to_string());
    let from_query = query_token(req.uri().query());
    let given = bearer
        .clone()
        .or_else(|| from_query.clone())
        .or_else(|| cookie_token(req.headers()));
    let ok = given.is_some_and(|t| kestrel_control::sha256_hex(&t) == api.admin_sha256);
    let is_api = req.uri().path().starts_with("/api/");
    if !ok {
        tracing::debug!(path = %req.uri().path(), "request without a valid admin token");
        return if is_api {
            (
                StatusCode::UNAUTHORIZED,
                Json(json!({"error": "admin token required (Authorization: Bearer TOKEN)"})),
            )
                .into_response()
        } else {
            (
                StatusCode::UNAUTHORIZED,
                Html(page("Kestrel: sign in", LOGIN)),
            )
                .into_response()
        };
    }
    let mut resp = next.run(req).await;
    if let (Some(t), false) = (from_query, is_api) {
        // The token given in the URL becomes a cookie so that links work.
        if let Ok(v) =
            format!("kestrel_admin={t}; HttpOnly; Secure; SameSite=Strict; Path=/").parse()
        {
            resp.headers_mut().insert(header::SET_COOKIE, v);
        }
    }
    resp
}

const LOGIN: &str = r#"<h1>Kestrel</h1><form method="get" action="/"><label>Admin token
<input type="password" name="token" autofocus></label> <button>Sign in</button></form>
<p>The token is in <code>DATA_DIR/admin.token</code>.</p>"#;

fn err(code: StatusCode, msg: impl Into<String>) -> Response {
    (code, Json(json!({"error": msg.into()}))).into_response()
}

async fn summary(State(api): State<Arc<Api>>) -> Response {
    Json(api.fleet.summary()).into_response()
}

async fn agents(State(api): State<Arc<Api>>) -> Response {
    Json(api.fleet.list()).into_response()
}

async fn agent(State(api): State<Arc<Api>>, Path(id): Path<String>) -> Response {
    let Some((view, hb)) = api.fleet.get(&id) else {
        return err(StatusCode::NOT_FOUND, format!("no agent {id}"));
    };
    let store = api.fleet.store.clone();
    let who = id.clone();
    let (history, commands) = match tokio::task::spawn_blocking(move || {
        Ok::<_, crate::store::StoreError>((
            store.heartbeats(&who, 20)?,
            store.commands_of(&who, 20)?,
        ))
    })
    .await
    {
        Ok(Ok(x)) => x,
        Ok(Err(e)) => return err(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(e) => return err(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    Json(json!({
        "agent": view,
        "heartbeat": hb.as_ref().map(crate::json::heartbeat_json),
        "history": history.iter().map(|(at, j)| json!({"at": at, "heartbeat": serde_json::from_str::<serde_json::Value>(j).unwrap_or_default()})).collect::<Vec<_>>(),
        "commands": commands,
    }))
    .into_response()
}

/// A command as posted.
#[derive(Debug, Deserialize)]
pub struct NewCommand {
    /// inventory, scan-rootkit, restart or config.
    pub kind: String,
    /// KEY=VALUE for config.
    #[serde(default)]
    pub arg: String,
}

/// Checks a command, stores it for each agent, delivers it to those
/// connected. Returns the stored rows.
pub async fn send_commands(
    fleet: &Arc<Fleet>,
    agents: Vec<String>,
    c: &NewCommand,
    batch: Option<String>,
) -> Result<Vec<CommandRow>, Response> {
    if !KINDS.contains(&c.kind.as_str()) {
        return Err(err(
            StatusCode::BAD_REQUEST,
            format!(
                "unknown command {:?}: use one of {}",
                c.kind,
                KINDS.join(", ")
            ),
        ));
    }
    if c.kind == "config" && !c.arg.contains('=') {
        return Err(err(StatusCode::BAD_REQUEST, "config needs KEY=VALUE"));
    }
    let now = now_ms();
    let rows: Vec<CommandRow> = agents
        .into_iter()
        .map(|a| CommandRow {
            id: kestrel_control::new_uuid(),
            agent_id: a,
            batch: batch.clone(),
            kind: c.kind.clone(),
            arg: c.arg.clone(),
            status: "pending".into(),
            result: String::new(),
            created_at: now,
            sent_at: None,
            done_at: None,
        })
        .collect();
    let store = fleet.store.clone();
    let saved = rows.clone();
    tokio::task::spawn_blocking(move || store.add_commands(&saved))
        .await
        .map_err(|e| err(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(|e| err(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    fleet.wake(rows.iter().map(|r| r.agent_id.as_str()));
    Ok(rows)
}

async fn command(
    State(api): State<Arc<Api>>,
    Path(id): Path<String>,
    Json(c): Json<NewCommand>,
) -> Response {
    match api.fleet.get(&id) {
        None => return err(StatusCode::NOT_FOUND, format!("no agent {id}")),
        Some((v, _)) if v.state == "revoked" => {
            return err(StatusCode::CONFLICT, format!("agent {id} is revoked"))
        }
        _ => {}
    }
    match send_commands(&api.fleet, vec![id], &c, None).await {
        Ok(rows) => (StatusCode::CREATED, Json(json!({"id": rows[0].id}))).into_response(),
        Err(r) => r,
    }
}

async fn broadcast(State(api): State<Arc<Api>>, Json(c): Json<NewCommand>) -> Response {
    let ids = api.fleet.ids();
    let batch = kestrel_control::new_uuid();
    match send_commands(&api.fleet, ids, &c, Some(batch.clone())).await {
        Ok(rows) => (
            StatusCode::CREATED,
            Json(json!({"batch": batch, "commands": rows.len()})),
        )
            .into_response(),
        Err(r) => r,
    }
}

async fn command_status(State(api): State<Arc<Api>>, Path(id): Path<String>) -> Response {
    let store = api.fleet.store.clone();
    match tokio::task::spawn_blocking(move || store.command(&id)).await {
        Ok(Ok(Some(c))) => Json(c).into_response(),
        Ok(Ok(None)) => err(StatusCode::NOT_FOUND, "no such command"),
        Ok(Err(e)) => err(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(e) => err(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn batch(State(api): State<Arc<Api>>, Path(id): Path<String>) -> Response {
    let store = api.fleet.store.clone();
    match tokio::task::spawn_blocking(move || store.batch(&id)).await {
        Ok(Ok(b)) => Json(b).into_response(),
        Ok(Err(e)) => err(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(e) => err(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn revoke(State(api): State<Arc<Api>>, Path(id): Path<String>) -> Response {
    let store = api.fleet.store.clone();
    let who = id.clone();
    match tokio::task::spawn_blocking(move || store.revoke(&who)).await {
        Ok(Ok(true)) => {
            api.fleet.revoke(&id);
            tracing::warn!(agent_id = %id, "agent revoked");
            Json(json!({"revoked": id})).into_response()
        }
        Ok(Ok(false)) => err(StatusCode::NOT_FOUND, format!("no agent {id}")),
        Ok(Err(e)) => err(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(e) => err(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// HTML-escapes `s`.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn page(title: &str, body: &str) -> String {
    format!(
        r#"<!doctype html><html><head><meta charset="utf-8"><title>{}</title>
<style>body{{font-family:sans-serif;margin:1.5em;color:#222}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:.3em .6em;text-align:left;font-size:14px}}th{{background:#eee}}
.online{{color:#080;font-weight:bold}}.offline{{color:#a00;font-weight:bold}}.revoked{{color:#666}}
.counts span{{margin-right:1.5em;font-size:18px}}code{{background:#f4f4f4}}</style></head><body>{}</body></html>"#,
        esc(title),
        body
    )
}

fn ago(secs: Option<f64>) -> String {
    match secs {
        None => "never".into(),
        Some(s) if s < 120.0 => format!("{s:.0} s ago"),
        Some(s) if s < 7200.0 => format!("{:.0} min ago", s / 60.0),
        Some(s) => format!("{:.1} h ago", s / 3600.0),
    }
}

async fn dashboard(State(api): State<Arc<Api>>) -> Html<String> {
    let s = api.fleet.summary();
    let mut b = String::new();
    let _ = write!(
        b,
        r#"<meta http-equiv="refresh" content="10"><h1>Kestrel fleet</h1><p class="counts">
<span>agents: <b id="total">{}</b></span><span class="online">online: <b id="online">{}</b></span>
<span class="offline">offline: <b id="offline">{}</b></span><span class="revoked">revoked: <b>{}</b></span></p>
<table id="agents"><tr><th>host</th><th>state</th><th>last heartbeat</th><th>version</th><th>kernel</th>
<th>events/s</th><th>drops</th><th>CPU %</th><th>RSS MiB</th><th>probes active</th><th>not attached</th><th>id</th></tr>"#,
        s.total, s.online, s.offline, s.revoked
    );
    for a in api.fleet.list() {
        let _ = write!(
            b,
            r#"<tr class="agent"><td><a href="/agents/{id}">{host}</a></td><td class="{st}">{st}</td><td>{ago}</td>
<td>{ver}</td><td>{kern}</td><td>{eps:.1}</td><td>{drops}</td><td>{cpu:.1}</td><td>{rss:.1}</td><td>{act}</td><td>{inact}</td><td><code>{id}</code></td></tr>"#,
            id = esc(&a.id),
            host = esc(&a.hostname),
            st = a.state,
            ago = ago(a.last_heartbeat_age_secs),
            ver = esc(&a.version),
            kern = esc(&a.kernel),
            eps = a.events_per_sec,
            drops = a.drops,
            cpu = a.cpu_percent,
            rss = a.rss_bytes as f64 / 1048576.0,
            act = a.probes_active.len(),
            inact = a.probes_inactive.len(),
        );
    }
    b.push_str("</table>");
    Html(page("Kestrel fleet", &b))
}

async fn agent_page(State(api): State<Arc<Api>>, Path(id): Path<String>) -> Response {
    let Some((a, hb)) = api.fleet.get(&id) else {
        return (
            StatusCode::NOT_FOUND,
            Html(page("not found", "<h1>No such agent</h1>")),
        )
            .into_response();
    };
    let store = api.fleet.store.clone();
    let who = id.clone();
    let commands = tokio::task::spawn_blocking(move || store.commands_of(&who, 20))
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    let hb = hb.unwrap_or_default();
    let mut b = String::new();
    let _ = write!(
        b,
        r#"<p><a href="/">&larr; all agents</a></p><h1>{host}</h1><table>
<tr><th>id</th><td><code>{id}</code></td></tr><tr><th>state</th><td class="{st}">{st}{conn}</td></tr>
<tr><th>last heartbeat</th><td>{ago}</td></tr><tr><th>version</th><td>{ver}</td></tr>
<tr><th>OS / kernel</th><td>{os} / {kern}</td></tr><tr><th>addresses</th><td>{ips}</td></tr>
<tr><th>uptime</th><td>{up} s</td></tr><tr><th>CPU / RSS</th><td>{cpu:.1} % / {rss:.1} MiB</td></tr>
<tr><th>events</th><td>{eps:.1}/s, {tot} total, {filt} filtered</td></tr>
<tr><th>drops</th><td>{drops} (kernel lost {kl}, write errors {we}); spool {sb} bytes, {sd} dropped</td></tr>
<tr><th>last error</th><td>{le}</td></tr></table><h2>Probes</h2><table><tr><th>program</th><th>hook</th><th>state</th><th>reason</th></tr>"#,
        host = esc(&a.hostname),
        id = esc(&a.id),
        st = a.state,
        conn = if a.connected { " (connected)" } else { "" },
        ago = ago(a.last_heartbeat_age_secs),
        ver = esc(&a.version),
        os = esc(&a.os),
        kern = esc(&a.kernel),
        ips = esc(&a.ips.join(", ")),
        up = a.uptime_secs,
        cpu = a.cpu_percent,
        rss = a.rss_bytes as f64 / 1048576.0,
        eps = a.events_per_sec,
        tot = hb.events_total,
        filt = hb.filtered,
        drops = a.drops,
        kl = hb.kernel_lost,
        we = hb.write_errors,
        sb = hb.spool_bytes,
        sd = hb.spool_dropped,
        le = esc(&a.last_error),
    );
    for p in &hb.probes {
        let _ = write!(
            b,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&p.program),
            esc(&p.hook),
            esc(&p.state),
            esc(&p.reason)
        );
    }
    let _ = write!(
        b,
        r#"</table><h2>Send a command</h2><form method="post" action="/agents/{id}/command">
<select name="kind">{opts}</select> <input name="arg" placeholder="KEY=VALUE (config)"> <button>Send</button></form>
<h2>Commands</h2><table id="commands"><tr><th>created</th><th>command</th><th>status</th><th>result</th></tr>"#,
        id = esc(&a.id),
        opts = KINDS
            .iter()
            .map(|k| format!("<option>{k}</option>"))
            .collect::<String>()
    );
    for c in commands {
        let _ = write!(
            b,
            "<tr><td>{}</td><td>{} {}</td><td>{}</td><td>{}</td></tr>",
            ago(Some((now_ms() - c.created_at) as f64 / 1000.0)),
            esc(&c.kind),
            esc(&c.arg),
            esc(&c.status),
            esc(&c.result)
        );
    }
    b.push_str("</table>");
    Html(page(&format!("Kestrel: {}", a.hostname), &b)).into_response()
}

async fn command_form(
    State(api): State<Arc<Api>>,
    Path(id): Path<String>,
    Form(f): Form<HashMap<String, String>>,
) -> Response {
    let c = NewCommand {
        kind: f.get("kind").cloned().unwrap_or_default(),
        arg: f.get("arg").cloned().unwrap_or_default(),
    };
    if api.fleet.get(&id).is_none() {
        return (
            StatusCode::NOT_FOUND,
            Html(page("not found", "<h1>No such agent</h1>")),
        )
            .into_response();
    }
    match send_commands(&api.fleet, vec![id.clone()], &c, None).await {
        Ok(_) => Redirect::to(&format!("/agents/{id}")).into_response(),
        Err(r) => r,
    }
}
