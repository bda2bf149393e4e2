//! The web console (issue 19): static assets embedded in the binary under `/ui/`, the login-code
//! exchange and logout (see [`crate::auth::session`] for how sessions are kept and end), and
//! `POST /v1/console/codes`, which gives a token holder a one-time login code.
//!
//! The assets are plain ES modules and vendored library files (no build step, no Node.js); they
//! are public, like any program's code, and hold no data: every figure the console shows comes
//! from the `/v1` API, which needs the token or a session.

use crate::auth::{session, Peer};
use crate::error::HttpError;
use crate::Api;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Json;
use nodeagent_types::{ApiError, ErrorCode};
use serde_json::json;

/// `(path under /ui/, content type, bytes)`.
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_bytes!("../ui/index.html"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../ui/app.js"),
    ),
    (
        "api.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../ui/api.js"),
    ),
    (
        "charts.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../ui/charts.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_bytes!("../ui/style.css"),
    ),
    (
        "vendor/uplot/uPlot.esm.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../ui/vendor/uplot/uPlot.esm.js"),
    ),
    (
        "vendor/uplot/uPlot.min.css",
        "text/css; charset=utf-8",
        include_bytes!("../ui/vendor/uplot/uPlot.min.css"),
    ),
    (
        "vendor/js-yaml/js-yaml.esm.min.mjs",
        "text/javascript; charset=utf-8",
        include_bytes!("../ui/vendor/js-yaml/js-yaml.esm.min.mjs"),
    ),
];

/// Scripts and styles from the agent only; no frames; connections to the agent only.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
                   img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; \
                   base-uri 'none'; form-action 'self'";

/// Requests the guard lets in without credentials: the assets, and the code exchange (whose
/// handler checks the code).
pub(crate) fn open_path(method: &Method, path: &str) -> bool {
    let under_ui = path == "/ui" || path.starts_with("/ui/");
    match *method {
        Method::GET | Method::HEAD => under_ui,
        Method::POST => path == "/ui/session",
        _ => false,
    }
}

/// The `/ui` routes (not API routes, so not in [`super::ROUTES`] or `openapi.json`).
pub(crate) fn routes() -> axum::Router<Api> {
    axum::Router::new()
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route("/ui/", get(|| async { asset("index.html") }))
        .route("/ui/session", post(login))
        .route("/ui/logout", post(logout))
        .route(
            "/ui/{*file}",
            get(|Path(f): Path<String>| async move { asset(&f) }),
        )
}

fn asset(file: &str) -> Response {
    let Some((_, mime, bytes)) = ASSETS.iter().find(|(p, _, _)| *p == file) else {
        return HttpError::from(ApiError::new(
            ErrorCode::NotFound,
            format!("no console file {}", crate::request::truncate(file)),
        ))
        .into_response();
    };
    let mut r = Bytes::from_static(bytes).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(mime));
    // Small files, and a new agent may bring new ones: revalidate rather than cache.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    r
}

fn unavailable(e: std::io::Error) -> HttpError {
    ApiError::unavailable(format!("no random numbers for a login code: {e}")).into()
}

/// `POST /v1/console/codes`: a one-time login code for the console, for a client that holds
/// the token (or the unix socket). `path` is where a browser on the agent's TCP address goes.
pub async fn new_code() -> Result<Response, HttpError> {
    let code = session::new_code().map_err(unavailable)?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "code": code,
            "expires_in_s": session::CODE_TTL.as_secs(),
            "path": format!("/ui/#login={code}"),
        })),
    )
        .into_response())
}

/// `POST /ui/session` with `{"code": "..."}`: redeems a login code for a session cookie.
async fn login(req: axum::extract::Request) -> Result<Response, HttpError> {
    let secure = matches!(
        req.extensions().get::<ConnectInfo<Peer>>(),
        Some(ConnectInfo(Peer::Tls { .. }))
    );
    let body = axum::body::to_bytes(req.into_body(), 4096)
        .await
        .map_err(|_| ApiError::invalid("code", "the body is too large or was cut off"))?;
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Login {
        code: String,
    }
    let l: Login = serde_json::from_slice(&body)
        .map_err(|e| ApiError::invalid("code", format!("send {{\"code\": \"...\"}}: {e}")))?;
    let Some(id) = session::redeem(l.code.trim()).map_err(unavailable)? else {
        return Err(ApiError::new(
            ErrorCode::Unauthorized,
            "the login code is unknown, used or expired (codes last 60 s and work once): run `nodeagent ui` again",
        )
        .into());
    };
    let cookie = format!(
        "{}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        session::COOKIE,
        session::MAX_TTL.as_secs(),
        if secure { "; Secure" } else { "" }
    );
    let mut r = Json(json!({"status": "ok", "idle_timeout_s": session::IDLE_TTL.as_secs()}))
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(r)
}

/// `POST /ui/logout`: ends the session and clears the cookie.
async fn logout(State(_): State<Api>, headers: HeaderMap) -> Response {
    if let Some(id) = session::cookie(&headers) {
        session::end(id);
    }
    let mut r = Json(json!({"status": "logged out"})).into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static(
            "nodeagent_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0",
        ),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_assets_and_the_code_exchange_are_open() {
        assert!(open_path(&Method::GET, "/ui/"));
        assert!(open_path(&Method::GET, "/ui/app.js"));
        assert!(open_path(&Method::POST, "/ui/session"));
        assert!(!open_path(&Method::POST, "/ui/logout"));
        assert!(!open_path(&Method::GET, "/uix"));
        assert!(!open_path(&Method::GET, "/v1/objects"));
        assert!(!open_path(&Method::DELETE, "/ui/app.js"));
    }

    #[test]
    fn every_module_imported_is_embedded() {
        // Each `from './x.js'` and each `href`/`src` of index.html names an embedded file.
        for (name, _, bytes) in ASSETS {
            let text = String::from_utf8_lossy(bytes);
            if !(name.ends_with(".html") || (name.ends_with(".js") && !name.starts_with("vendor/")))
            {
                continue;
            }
            for part in text.split(['\'', '"']) {
                let Some(rel) = part.strip_prefix("./").or_else(|| {
                    (part.ends_with(".js") || part.ends_with(".css") || part.ends_with(".mjs"))
                        .then_some(part)
                }) else {
                    continue;
                };
                if rel.contains(' ') || rel.contains('/') && !rel.starts_with("vendor/") {
                    continue;
                }
                assert!(
                    ASSETS.iter().any(|(p, _, _)| *p == rel),
                    "{name} refers to {rel}, which is not embedded"
                );
            }
        }
    }
}
