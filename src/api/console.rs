//! The admin console: one static page (HTML, JS, CSS compiled into the binary) at `/admin`
//! that signs in with the admin token and drives the JSON admin API from the browser, in
//! English or Simplified Chinese (`i18n.js`), with charts it draws itself (`charts.js`).
//! The assets hold no secret: the token is typed in by the admin and kept in the tab's
//! `sessionStorage` only.

use actix_web::http::header::{self, ContentType};
use actix_web::HttpResponse;

const HTML: &str = include_str!("console/admin.html");
const JS: &str = include_str!("console/admin.js");
const I18N_JS: &str = include_str!("console/i18n.js");
const CHARTS_JS: &str = include_str!("console/charts.js");
const CSS: &str = include_str!("console/admin.css");

/// Everything from this origin only; no inline script or style, no framing, no plugins.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; form-action 'none'; base-uri 'none'; \
     frame-ancestors 'none'";

fn asset(content_type: ContentType, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header(content_type)
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::CONTENT_SECURITY_POLICY, CSP))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .body(body)
}

/// `GET /admin`: the page.
pub async fn page() -> HttpResponse {
    asset(ContentType::html(), HTML)
}

fn javascript(body: &'static str) -> HttpResponse {
    asset(
        ContentType(
            "text/javascript; charset=utf-8"
                .parse()
                .expect("valid mime"),
        ),
        body,
    )
}

/// `GET /admin/admin.js`
pub async fn script() -> HttpResponse {
    javascript(JS)
}

/// `GET /admin/i18n.js`: the message catalogues (English, Simplified Chinese).
pub async fn catalogues() -> HttpResponse {
    javascript(I18N_JS)
}

/// `GET /admin/charts.js`: the SVG charts.
pub async fn charts() -> HttpResponse {
    javascript(CHARTS_JS)
}

/// `GET /admin/admin.css`
pub async fn style() -> HttpResponse {
    asset(
        ContentType("text/css; charset=utf-8".parse().expect("valid mime")),
        CSS,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::body::MessageBody;

    #[actix_web::test]
    async fn assets_are_served_with_strict_headers() {
        for (resp, kind) in [
            (page().await, "text/html"),
            (script().await, "text/javascript"),
            (catalogues().await, "text/javascript"),
            (charts().await, "text/javascript"),
            (style().await, "text/css"),
        ] {
            assert_eq!(resp.status(), 200);
            let h = |name| resp.headers().get(name).unwrap().to_str().unwrap();
            assert!(h(header::CONTENT_TYPE).starts_with(kind));
            assert_eq!(h(header::CACHE_CONTROL), "no-store");
            assert_eq!(h(header::CONTENT_SECURITY_POLICY), CSP);
            let body = resp.into_body().try_into_bytes().unwrap();
            assert!(!body.is_empty());
        }
    }

    #[test]
    fn page_loads_only_its_own_assets() {
        for script in ["/admin/i18n.js", "/admin/charts.js", "/admin/admin.js"] {
            assert!(HTML.contains(&format!(r#"src="{script}""#)), "{script}");
        }
        assert!(HTML.contains(r#"href="/admin/admin.css""#));
        assert!(!HTML.contains("<script>"), "no inline script (CSP)");
        assert!(!HTML.contains("style=\""), "no inline style (CSP)");
        assert!(!HTML.contains("http://") && !HTML.contains("https://"));
        for js in [JS, I18N_JS, CHARTS_JS] {
            assert!(!js.contains("http://") && !js.contains("https://"));
        }
    }
}
