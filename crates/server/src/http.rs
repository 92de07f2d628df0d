//! The HTTP API (JSON) and the dashboard, over TLS with the server's
//! certificate. The API (`/api/...`, used by `kestrel ctl`) takes the admin
//! token as `Authorization: Bearer TOKEN` and nothing else. The dashboard
//! takes a session: signing in posts the token once (`POST /login`), the
//! server answers with a random session id in an HttpOnly, Secure,
//! SameSite=Strict cookie, kept server-side, expiring after an idle hour or
//! twelve hours in all, ended by `POST /logout`. The token is never in a
//! URL or a cookie.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Extension, Form, Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::conn::Throttle;
use crate::fleet::{now_ms, Fleet};
use crate::store::{CommandRow, TokenRow};

/// The remote address of the request's connection.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

/// Name of the dashboard's session cookie.
pub const SESSION_COOKIE: &str = "kestrel_session";
/// A session unused this long ends.
const SESSION_IDLE: Duration = Duration::from_secs(3600);
/// A session ends this long after sign-in whatever its use.
const SESSION_MAX: Duration = Duration::from_secs(12 * 3600);
/// Most sessions at once; past it the oldest ends.
const MAX_SESSIONS: usize = 64;

struct Session {
    created: Instant,
    last_used: Instant,
}

/// What the HTTP handlers share.
pub struct Api {
    /// The fleet.
    pub fleet: Arc<Fleet>,
    /// SHA-256 of the admin token.
    pub admin_sha256: String,
    /// Dashboard sessions by the SHA-256 of their id (the ids themselves
    /// are only in the browsers).
    sessions: Mutex<HashMap<String, Session>>,
    /// Refusals, logged at most once a second each.
    refusals: Throttle,
}

impl Api {
    /// No sessions yet.
    pub fn new(fleet: Arc<Fleet>, admin_sha256: String) -> Api {
        Api {
            fleet,
            admin_sha256,
            sessions: Mutex::new(HashMap::new()),
            refusals: Throttle::default(),
        }
    }

    /// Starts a session; returns its id.
    fn open_session(&self) -> String {
        let id = kestrel_control::random_hex(32);
        let now = Instant::now();
        let mut m = self.sessions.lock().unwrap();
        m.retain(|_, s| live(s, now));
        if m.len() >= MAX_SESSIONS {
            if let Some(oldest) = m
                .iter()
                .min_by_key(|(_, s)| s.created)
                .map(|(k, _)| k.clone())
            {
                m.remove(&oldest);
            }
        }
        m.insert(
            kestrel_control::sha256_hex(&id),
            Session {
                created: now,
                last_used: now,
            },
        );
        id
    }

    /// Whether `id` is a live session; marks it used.
    fn use_session(&self, id: &str) -> bool {
        let key = kestrel_control::sha256_hex(id);
        let now = Instant::now();
        let mut m = self.sessions.lock().unwrap();
        match m.get_mut(&key) {
            Some(s) if live(s, now) => {
                s.last_used = now;
                true
            }
            Some(_) => {
                m.remove(&key);
                false
            }
            None => false,
        }
    }

    fn close_session(&self, id: &str) {
        self.sessions
            .lock()
            .unwrap()
            .remove(&kestrel_control::sha256_hex(id));
    }

    fn is_admin_token(&self, t: &str) -> bool {
        kestrel_control::sha256_hex(t.trim()) == self.admin_sha256
    }
}

fn live(s: &Session, now: Instant) -> bool {
    now.duration_since(s.last_used) < SESSION_IDLE && now.duration_since(s.created) < SESSION_MAX
}

/// Command kinds agents understand.
pub const KINDS: [&str; 5] = [
    "inventory",
    "scan-rootkit",
    "reload-rules",
    "restart",
    "config",
];

/// The router.
pub fn router(api: Arc<Api>) -> Router {
    Router::new()
        .route("/", get(dashboard))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/agents/{id}", get(agent_page))
        .route("/agents/{id}/command", post(command_form))
        .route("/api/summary", get(summary))
        .route("/api/agents", get(agents))
        .route("/api/agents/{id}", get(agent))
        .route("/api/agents/{id}/commands", post(command))
        .route("/api/agents/{id}/revoke", post(revoke))
        .route("/api/agents/{id}/approve", post(approve))
        .route("/api/commands", post(broadcast))
        .route("/api/commands/{id}", get(command_status))
        .route("/api/batches/{id}", get(batch))
        .route("/api/tokens", get(tokens).post(new_token))
        .route("/api/tokens/{id}/revoke", post(revoke_token))
        .layer(axum::middleware::from_fn_with_state(api.clone(), auth))
        .with_state(api)
}

fn session_cookie(h: &HeaderMap) -> Option<String> {
    h.get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| {
            kv.trim()
                .strip_prefix(SESSION_COOKIE)
                .and_then(|v| v.strip_prefix('='))
                .map(String::from)
        })
}

/// A form posted from another site: browsers say where a POST comes from,
/// and the dashboard's own forms come from the dashboard.
fn cross_site(req: &Request) -> bool {
    let h = req.headers();
    match (
        h.get(header::ORIGIN).and_then(|v| v.to_str().ok()),
        h.get(header::HOST).and_then(|v| v.to_str().ok()),
    ) {
        (Some(origin), Some(host)) => origin != format!("https://{host}"),
        (Some(_), None) => true,
        (None, _) => false,
    }
}

async fn auth(State(api): State<Arc<Api>>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if path.starts_with("/api/") {
        let bearer = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !bearer.is_some_and(|t| api.is_admin_token(t)) {
            tracing::debug!(path = %path, "API request without a valid admin token");
            return (
                StatusCode::UNAUTHORIZED,
                Json(json!({"error": "admin token required (Authorization: Bearer TOKEN)"})),
            )
                .into_response();
        }
        return next.run(req).await;
    }
    if req.method() == Method::POST && cross_site(&req) {
        let peer = req.extensions().get::<Peer>().map(|p| p.0);
        if let Some(left_out) = api.refusals.allow("cross-site") {
            tracing::warn!(?peer, left_out, path = ?path, "dashboard form posted from another site: refused");
        }
        return html_headers(
            (
                StatusCode::FORBIDDEN,
                Html(page("Kestrel", "<h1>Refused</h1>")),
            )
                .into_response(),
        );
    }
    let signed_in = session_cookie(req.headers()).is_some_and(|s| api.use_session(&s));
    let resp = if signed_in || path == "/login" || path == "/logout" {
        next.run(req).await
    } else {
        (StatusCode::UNAUTHORIZED, Html(login_html(""))).into_response()
    };
    html_headers(resp)
}

/// What every dashboard page says to the browser: not cached, never in a
/// frame, no scripts, forms only to itself, no referrer to other sites.
fn html_headers(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    for (k, v) in [
        (header::CACHE_CONTROL, "no-store"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
        ),
        // same-origin, not no-referrer: with no-referrer, browsers send
        // `Origin: null` on the dashboard's own forms.
        (header::REFERRER_POLICY, "same-origin"),
    ] {
        h.insert(k, HeaderValue::from_static(v));
    }
    resp
}

fn login_html(error: &str) -> String {
    let error = if error.is_empty() {
        String::new()
    } else {
        format!(r#"<p class="offline" id="error">{}</p>"#, esc(error))
    };
    page(
        "Kestrel: sign in",
        &format!(
            r#"<h1>Kestrel</h1>{error}<form method="post" action="/login" id="login"><label>Admin token
<input type="password" name="token" autofocus autocomplete="off"></label> <button>Sign in</button></form>
<p>The token is in <code>DATA_DIR/admin.token</code>.</p>"#
        ),
    )
}

async fn login_page() -> Response {
    Html(login_html("")).into_response()
}

async fn login(
    State(api): State<Arc<Api>>,
    peer: Option<Extension<Peer>>,
    Form(f): Form<HashMap<String, String>>,
) -> Response {
    let peer = peer.map(|p| p.0 .0);
    if !f.get("token").is_some_and(|t| api.is_admin_token(t)) {
        if let Some(left_out) = api.refusals.allow("sign-in") {
            tracing::warn!(
                ?peer,
                left_out,
                "dashboard sign-in refused: wrong admin token"
            );
        }
        return (StatusCode::UNAUTHORIZED, Html(login_html("Wrong token."))).into_response();
    }
    let sid = api.open_session();
    tracing::info!(?peer, "dashboard sign-in");
    let cookie = format!(
        "{SESSION_COOKIE}={sid}; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age={}",
        SESSION_MAX.as_secs()
    );
    let mut resp = Redirect::to("/").into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

async fn logout(State(api): State<Arc<Api>>, headers: HeaderMap) -> Response {
    if let Some(sid) = session_cookie(&headers) {
        api.close_session(&sid);
    }
    let mut resp = Redirect::to("/login").into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&format!(
            "{SESSION_COOKIE}=; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age=0"
        ))
        .expect("a valid header"),
    );
    resp
}

/// The sign-out button of every signed-in page.
const SIGN_OUT: &str = r#"<form method="post" action="/logout" style="float:right"><button id="logout">Sign out</button></form>"#;

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
    /// inventory, scan-rootkit, reload-rules, restart or config.
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

/// An approval of re-enrollment as posted.
#[derive(Debug, Default, Deserialize)]
pub struct Approval {
    /// How long the approval holds [default: one hour].
    #[serde(default)]
    pub valid_secs: Option<u64>,
}

async fn approve(
    State(api): State<Arc<Api>>,
    Path(id): Path<String>,
    body: Option<Json<Approval>>,
) -> Response {
    let secs = body.and_then(|b| b.0.valid_secs).unwrap_or(3600).max(1);
    let until = now_ms().saturating_add((secs.min(30 * 86400) * 1000) as i64);
    let store = api.fleet.store.clone();
    let who = id.clone();
    match tokio::task::spawn_blocking(move || store.approve_reenroll(&who, until)).await {
        Ok(Ok(Some(true))) => {
            tracing::warn!(agent_id = ?id, valid_secs = secs,
                "re-enrollment approved: the next enrollment of this id replaces its secret");
            Json(json!({"approved": id, "until": until})).into_response()
        }
        Ok(Ok(Some(false))) => err(StatusCode::CONFLICT, format!("agent {id} is revoked")),
        Ok(Ok(None)) => err(StatusCode::NOT_FOUND, format!("no agent {id}")),
        Ok(Err(e)) => err(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(e) => err(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// A per-host token as asked for.
#[derive(Debug, Deserialize)]
pub struct NewToken {
    /// The host it is for.
    pub host: String,
    /// Hours it stays valid unused; 0: until used or revoked [default: a
    /// week].
    #[serde(default)]
    pub valid_hours: Option<u64>,
}

async fn new_token(State(api): State<Arc<Api>>, Json(t): Json<NewToken>) -> Response {
    if t.host.is_empty() || t.host.len() > 255 || t.host.chars().any(char::is_control) {
        return err(
            StatusCode::BAD_REQUEST,
            "host must be 1-255 characters, no control characters",
        );
    }
    let token = kestrel_control::random_hex(24);
    let now = now_ms();
    let hours = t.valid_hours.unwrap_or(168).min(24 * 366);
    let row = TokenRow {
        id: kestrel_control::random_hex(8),
        host: t.host,
        token_sha256: kestrel_control::sha256_hex(&token),
        created_at: now,
        expires_at: (hours > 0).then(|| now + (hours * 3_600_000) as i64),
        revoked: false,
        used_by: None,
        used_at: None,
    };
    let store = api.fleet.store.clone();
    let saved = row.clone();
    match tokio::task::spawn_blocking(move || store.add_token(&saved)).await {
        Ok(Ok(())) => {
            tracing::info!(token_id = %row.id, host = ?row.host, "per-host enrollment token made");
            (
                StatusCode::CREATED,
                Json(json!({"id": row.id, "host": row.host, "token": token, "expires_at": row.expires_at})),
            )
                .into_response()
        }
        Ok(Err(e)) => err(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(e) => err(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn tokens(State(api): State<Arc<Api>>) -> Response {
    let store = api.fleet.store.clone();
    match tokio::task::spawn_blocking(move || store.tokens()).await {
        Ok(Ok(t)) => Json(t).into_response(),
        Ok(Err(e)) => err(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(e) => err(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn revoke_token(State(api): State<Arc<Api>>, Path(id): Path<String>) -> Response {
    let store = api.fleet.store.clone();
    let which = id.clone();
    match tokio::task::spawn_blocking(move || store.revoke_token(&which)).await {
        Ok(Ok(true)) => {
            tracing::warn!(token_id = ?id, "per-host enrollment token revoked");
            Json(json!({"revoked": id})).into_response()
        }
        Ok(Ok(false)) => err(StatusCode::NOT_FOUND, format!("no token {id}")),
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
            tracing::warn!(agent_id = ?id, "agent revoked");
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
        r#"<meta http-equiv="refresh" content="10">{SIGN_OUT}<h1>Kestrel fleet</h1><p class="counts">
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
        r#"{SIGN_OUT}<p><a href="/">&larr; all agents</a></p><h1>{host}</h1><table>
<tr><th>id</th><td><code>{id}</code></td></tr><tr><th>state</th><td class="{st}">{st}{conn}</td></tr>
<tr><th>last heartbeat</th><td>{ago}</td></tr><tr><th>version</th><td>{ver}</td></tr>
<tr><th>OS / kernel</th><td>{os} / {kern}</td></tr><tr><th>addresses</th><td>{ips}</td></tr>
<tr><th>uptime</th><td>{up} s</td></tr><tr><th>CPU / RSS</th><td>{cpu:.1} % / {rss:.1} MiB</td></tr>
<tr><th>events</th><td>{eps:.1}/s, {tot} total, {filt} filtered</td></tr>
<tr><th>drops</th><td>{drops} (kernel lost {kl}, write errors {we}); spool {sb} bytes, {sd} dropped</td></tr>
<tr><th>last error</th><td>{le}</td></tr></table><h2>Probes</h2><table id="probes"><tr><th>program</th><th>hook</th><th>backend</th><th>state</th><th>reason</th></tr>"#,
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
            "<tr><td>{}</td><td>{}</td><td title=\"{}\">{}</td><td>{}</td><td>{}</td></tr>",
            esc(&p.program),
            esc(&p.hook),
            esc(&p.backend_reason),
            esc(&p.backend),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn api() -> Api {
        let dir = std::env::temp_dir().join(format!("kserver-http-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let store: Arc<crate::store::Store> =
            Arc::from(crate::store::open(dir.join("kestrel.db").to_str().unwrap(), 3).unwrap());
        let fleet = Fleet::load(store, Duration::from_secs(90)).unwrap();
        Api::new(Arc::new(fleet), kestrel_control::sha256_hex("admin"))
    }

    #[test]
    fn sessions_are_random_server_side_and_end() {
        let api = api();
        let a = api.open_session();
        let b = api.open_session();
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
        assert!(api.use_session(&a) && api.use_session(&b));
        assert!(!api.use_session("admin"), "the token is not a session");
        api.close_session(&a);
        assert!(!api.use_session(&a));
        assert!(api.use_session(&b));
        // Past the bound, the oldest goes.
        for _ in 0..MAX_SESSIONS {
            api.open_session();
        }
        assert!(!api.use_session(&b));
        assert!(api.sessions.lock().unwrap().len() <= MAX_SESSIONS);
    }

    #[test]
    fn sessions_expire_when_idle_or_old() {
        let now = Instant::now();
        let s = |created: u64, used: u64| Session {
            created: now - Duration::from_secs(created),
            last_used: now - Duration::from_secs(used),
        };
        assert!(live(&s(10, 5), now));
        assert!(!live(&s(4000, 3700), now), "idle");
        assert!(!live(&s(13 * 3600, 1), now), "too old");
    }

    #[test]
    fn forms_from_other_sites_are_told_apart() {
        let req = |origin: Option<&str>| {
            let mut b = axum::http::Request::builder()
                .method("POST")
                .uri("/login")
                .header(header::HOST, "127.0.0.1:8444");
            if let Some(o) = origin {
                b = b.header(header::ORIGIN, o);
            }
            b.body(axum::body::Body::empty()).unwrap()
        };
        assert!(!cross_site(&req(None)));
        assert!(!cross_site(&req(Some("https://127.0.0.1:8444"))));
        assert!(cross_site(&req(Some("https://evil.example"))));
        assert!(cross_site(&req(Some("null"))));
        assert!(cross_site(&req(Some("http://127.0.0.1:8444"))));
    }
}
