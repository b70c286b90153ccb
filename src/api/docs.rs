//! `/docs`: the OpenAPI description as an interactive page (Swagger UI), every asset
//! compiled into the binary so the page needs nothing from the internet. See
//! `docs_ui/README.md` for the vendored version and its licence.

use actix_web::http::header::{self, ContentType};
use actix_web::HttpResponse;

const HTML: &str = include_str!("docs_ui/index.html");
const INIT_JS: &str = include_str!("docs_ui/init.js");
const BUNDLE_JS: &str = include_str!("docs_ui/swagger-ui-bundle.js");
const CSS: &str = include_str!("docs_ui/swagger-ui.css");

/// Scripts and styles from this origin only; Swagger UI sets inline styles and uses
/// `data:` images.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
     img-src 'self' data:; font-src 'self' data:; connect-src 'self'; form-action 'none'; \
     base-uri 'none'; frame-ancestors 'none'";

fn asset(content_type: &'static str, body: &'static str, cache: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header(ContentType(content_type.parse().expect("valid mime")))
        .insert_header((header::CACHE_CONTROL, cache))
        .insert_header((header::CONTENT_SECURITY_POLICY, CSP))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .body(body)
}

/// `GET /docs`
pub async fn page() -> HttpResponse {
    asset("text/html; charset=utf-8", HTML, "no-cache")
}

/// `GET /docs/init.js`
pub async fn init_script() -> HttpResponse {
    asset("text/javascript; charset=utf-8", INIT_JS, "no-cache")
}

/// `GET /docs/swagger-ui-bundle.js`: pinned, so it may be cached for a day.
pub async fn bundle() -> HttpResponse {
    asset(
        "text/javascript; charset=utf-8",
        BUNDLE_JS,
        "public, max-age=86400",
    )
}

/// `GET /docs/swagger-ui.css`
pub async fn style() -> HttpResponse {
    asset("text/css; charset=utf-8", CSS, "public, max-age=86400")
}
