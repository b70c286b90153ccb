//! A webhook receiver: what a backend subscribed to formpush's webhooks sees.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde_json::Value;

/// One request as the receiver got it.
#[derive(Clone, Debug)]
pub struct Received {
    pub timestamp: Option<String>,
    pub signature: Option<String>,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

/// A webhook receiver on a random port: answers each request with the next scripted
/// status (200 once the script is used up) and keeps what it got.
pub struct Receiver {
    pub url: String,
    received: Arc<Mutex<Vec<Received>>>,
    _server: actix_web::dev::ServerHandle,
}

struct ReceiverState {
    script: Mutex<VecDeque<u16>>,
    received: Arc<Mutex<Vec<Received>>>,
}

async fn receive(
    state: web::Data<ReceiverState>,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    state.received.lock().unwrap().push(Received {
        timestamp: header("x-formpush-timestamp"),
        signature: header("x-formpush-signature"),
        content_type: header("content-type"),
        body: body.to_vec(),
    });
    let status = state.script.lock().unwrap().pop_front().unwrap_or(200);
    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap()).finish()
}

impl Receiver {
    pub fn start(script: &[u16]) -> Self {
        let received = Arc::new(Mutex::new(Vec::new()));
        let state = web::Data::new(ReceiverState {
            script: Mutex::new(script.iter().copied().collect()),
            received: received.clone(),
        });
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hooks/formpush", listener.local_addr().unwrap());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .route("/hooks/formpush", web::post().to(receive))
        })
        .workers(1)
        .disable_signals()
        .listen(listener)
        .unwrap()
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        Self {
            url,
            received,
            _server: handle,
        }
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}
