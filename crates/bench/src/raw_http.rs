//! A minimal keep-alive HTTP/1.1 client for the formId posts of (a) and the soak: as little
//! client work per request as possible, to leave the machine's CPU to the service.

use std::time::Duration;

use anyhow::{anyhow, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One keep-alive HTTP/1.1 connection with just enough of a client for this benchmark:
/// one request in flight, `Content-Length` bodies (what actix answers with).
pub struct RawConn {
    stream: TcpStream,
    buf: Vec<u8>,
}

fn find_subslice(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

impl RawConn {
    pub async fn connect(addr: &str) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(RawConn {
            stream,
            buf: Vec::with_capacity(4096),
        })
    }

    /// Sends one request, returns the status and the body.
    pub async fn roundtrip(&mut self, request: &[u8]) -> anyhow::Result<(u16, Vec<u8>)> {
        self.stream.write_all(request).await?;
        self.buf.clear();
        let mut chunk = [0u8; 4096];
        let mut header_end = None;
        let mut total = usize::MAX;
        // Bounded: a response larger than 1 MiB is an error.
        while self.buf.len() < total {
            let n = self.stream.read(&mut chunk).await?;
            if n == 0 {
                bail!("connection closed by the server");
            }
            self.buf.extend_from_slice(&chunk[..n]);
            if self.buf.len() > 1 << 20 {
                bail!("response too large");
            }
            if header_end.is_none() {
                if let Some(end) = find_subslice(&self.buf, b"\r\n\r\n") {
                    let head = std::str::from_utf8(&self.buf[..end])?;
                    let len = head
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.trim()
                                .eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse::<usize>().ok())?
                        })
                        .ok_or_else(|| anyhow!("response without Content-Length: {head}"))?;
                    header_end = Some(end);
                    total = end + 4 + len;
                }
            }
        }
        let end = header_end.ok_or_else(|| anyhow!("no response header"))?;
        let status_line = std::str::from_utf8(&self.buf[..end])?
            .lines()
            .next()
            .unwrap_or_default()
            .to_string();
        let status: u16 = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| anyhow!("bad status line {status_line:?}"))?;
        Ok((status, self.buf[end + 4..total].to_vec()))
    }

    /// `roundtrip`, failing after `timeout` (the connection is then unusable).
    pub async fn roundtrip_within(
        &mut self,
        request: &[u8],
        timeout: Duration,
    ) -> anyhow::Result<(u16, Vec<u8>)> {
        tokio::time::timeout(timeout, self.roundtrip(request))
            .await
            .map_err(|_| anyhow!("request timed out"))
            .and_then(|r| r)
    }
}
