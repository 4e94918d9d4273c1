//! The web console: a page and its script and style sheet, compiled into the binary (no
//! build step, no CDN; it works offline). `/` serves the page; `/console/{file}` its
//! assets. They hold no data: the page asks the API for everything with the key its user
//! gives, so these routes need none, and the API's own checks decide what it may see.

use axum::extract::Path;
use axum::http::{header, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};

use crmbus::ErrorCode;

use crate::problem::ApiError;

/// The page.
const INDEX: &str = include_str!("../../console/index.html");
/// The script.
const SCRIPT: &str = include_str!("../../console/console.js");
/// The style sheet.
const STYLE: &str = include_str!("../../console/console.css");

/// Only this origin's scripts, styles and API; never framed (clickjacking a redrive).
const POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; \
form-action 'none'";

/// An asset with its type and the headers every console answer carries.
fn asset(body: &'static str, content_type: &'static str) -> Response {
    let headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(POLICY),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
        // A new binary brings new assets: no stale script against a changed API.
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (
            HeaderName::from_static("x-frame-options"),
            HeaderValue::from_static("DENY"),
        ),
    ];
    (headers, body).into_response()
}

/// `GET /`: the console's page.
pub async fn page() -> Response {
    asset(INDEX, "text/html; charset=utf-8")
}

/// `GET /console/{file}`: the console's script and style sheet.
pub async fn file(Path(file): Path<String>) -> Result<Response, ApiError> {
    match file.as_str() {
        "console.js" => Ok(asset(SCRIPT, "text/javascript; charset=utf-8")),
        "console.css" => Ok(asset(STYLE, "text/css; charset=utf-8")),
        _ => Err(ApiError::new(
            ErrorCode::NotFound,
            format!("the console has no file '{file}'"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_only_the_assets_this_module_serves() {
        // Every script and style sheet the page names must be one `file` answers.
        for line in INDEX.lines() {
            // What the page loads (a script or a link to a sheet); plain links are not.
            if !line.contains("<script") && !line.contains("<link") {
                continue;
            }
            for attr in ["src=\"", "href=\""] {
                if let Some(at) = line.find(attr) {
                    let rest = &line[at + attr.len()..];
                    let url = &rest[..rest.find('"').unwrap_or(rest.len())];
                    // In-page links, and the empty icon (no request for /favicon.ico).
                    if url.starts_with('#') || url == "data:," {
                        continue;
                    }
                    assert!(
                        url == "/console/console.js" || url == "/console/console.css",
                        "the page loads {url}, which the console routes do not serve"
                    );
                }
            }
        }
        assert!(INDEX.contains("/console/console.js") && INDEX.contains("/console/console.css"));
    }
}
