//! A deliberately small HTTP/1.1 server for the operations endpoint: `GET` (and `HEAD`) only,
//! one request per connection, bodies built in memory. Operators' scrapers and browsers need
//! nothing more, and it keeps a web framework out of the scoring binary.

use std::{sync::Arc, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::Ops;

/// The longest request head accepted.
const MAX_HEAD: usize = 16 * 1024;

/// How long a client may take to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// A response: status line, content type, extra header lines, body.
pub(crate) struct Response {
    pub(crate) status: &'static str,
    pub(crate) content_type: &'static str,
    pub(crate) headers: &'static str,
    pub(crate) body: Vec<u8>,
}

impl Response {
    pub(crate) fn new(
        status: &'static str,
        content_type: &'static str,
        body: impl Into<Vec<u8>>,
    ) -> Self {
        Self {
            status,
            content_type,
            headers: "",
            body: body.into(),
        }
    }

    /// 401: the bearer token is missing or wrong.
    pub(crate) fn unauthorized() -> Self {
        Self {
            headers: "WWW-Authenticate: Bearer realm=\"keyscore\"\r\n",
            ..Self::new(
                "401 Unauthorized",
                "text/plain",
                "this endpoint needs its bearer token: Authorization: Bearer TOKEN\n",
            )
        }
    }
}

/// Accepts connections until `cancel` fires.
pub(crate) async fn serve(listener: TcpListener, ops: Arc<Ops>, cancel: CancellationToken) {
    loop {
        let stream = tokio::select! {
            _ = cancel.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(err) => {
                    debug!(error = %err, "Accepting an operations connection failed.");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let ops = Arc::clone(&ops);
        tokio::spawn(async move {
            if let Err(err) = handle(stream, &ops).await {
                debug!(error = %err, "Operations request failed.");
            }
        });
    }
}

async fn handle(mut stream: TcpStream, ops: &Ops) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 2048];
    let complete = tokio::time::timeout(READ_TIMEOUT, async {
        loop {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                return Ok::<bool, std::io::Error>(false);
            }
            head.extend_from_slice(&buf[..n]);
            if head.windows(4).any(|w| w == b"\r\n\r\n") {
                return Ok(true);
            }
            if head.len() > MAX_HEAD {
                return Ok(false);
            }
        }
    })
    .await
    .unwrap_or(Ok(false))?;
    let (method, path) = request_line(&head).unwrap_or(("", ""));
    let response = if !complete || method.is_empty() {
        Response::new("400 Bad Request", "text/plain", "bad request\n")
    } else if method != "GET" && method != "HEAD" {
        Response::new(
            "405 Method Not Allowed",
            "text/plain",
            "only GET and HEAD\n",
        )
    } else {
        ops.answer(path, &head)
    };
    let mut out = format!(
        "HTTP/1.1 {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\n{}Connection: close\r\n\r\n",
        response.status,
        response.content_type,
        response.body.len(),
        response.headers
    )
    .into_bytes();
    if method != "HEAD" {
        out.extend_from_slice(&response.body);
    }
    stream.write_all(&out).await?;
    stream.shutdown().await
}

/// The method and the path (without its query string) of a request head.
fn request_line(head: &[u8]) -> Option<(&str, &str)> {
    let line = head.split(|b| *b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?.trim_end();
    let mut parts = line.split(' ');
    let method = parts.next()?;
    let target = parts.next()?;
    parts.next().filter(|v| v.starts_with("HTTP/"))?;
    let path = target.split('?').next().unwrap_or(target);
    Some((method, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines_give_method_and_path_without_query() {
        assert_eq!(
            request_line(b"GET /status.json?t=1 HTTP/1.1\r\nHost: x\r\n\r\n"),
            Some(("GET", "/status.json"))
        );
        assert_eq!(
            request_line(b"HEAD / HTTP/1.0\r\n\r\n"),
            Some(("HEAD", "/"))
        );
        assert_eq!(request_line(b"garbage\r\n\r\n"), None);
        assert_eq!(request_line(&[0xff, 0xfe, b'\n']), None);
    }
}
