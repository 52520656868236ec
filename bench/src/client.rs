//! A minimal HTTP/1.1 client for load generation: one request at a time per connection
//! (keep-alive, no pipelining) and just enough parsing to find the status and the end of the
//! response (`Content-Length`, `chunked`, or close). It is faster than a general client because
//! the request bytes are rendered once per request into a reused buffer and nothing is decoded
//! beyond the head. Whatever the server sends, the outcome is a value: a malformed, oversized or
//! truncated response is a [`ClientError`], never a panic.

use std::fmt;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest response head accepted.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Largest response body accepted (the guard's and Stripe's answers are a few KiB).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Most header fields in one response head.
const MAX_HEADERS: usize = 64;
/// Longest chunk-size line (RFC 9112 allows extensions; nobody here sends long ones).
const MAX_CHUNK_LINE_BYTES: usize = 1024;
/// Bytes reserved in the read buffer before each read.
const READ_RESERVE_BYTES: usize = 16 * 1024;

/// Why one exchange failed.
#[derive(Debug)]
pub enum ClientError {
    /// Connect, read or write failed.
    Io(io::Error),
    /// The peer closed the connection before the response was complete.
    Closed,
    /// Bytes that are not an HTTP/1.1 response.
    Malformed(String),
    /// A head or body above the limits.
    TooLarge(&'static str),
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Io(e) => write!(f, "i/o error: {e}"),
            ClientError::Closed => {
                f.write_str("connection closed before the response was complete")
            }
            ClientError::Malformed(m) => write!(f, "malformed response: {m}"),
            ClientError::TooLarge(what) => write!(f, "response {what} over the limit"),
        }
    }
}

impl std::error::Error for ClientError {}

impl From<io::Error> for ClientError {
    fn from(e: io::Error) -> Self {
        ClientError::Io(e)
    }
}

/// Where requests go: the resolved address, the `Host` header and the request target.
#[derive(Clone, Debug)]
pub struct Target {
    /// Resolved socket address.
    pub addr: SocketAddr,
    /// `host:port` as given, for the `Host` header.
    pub authority: String,
    /// Path and query, starting with `/`.
    pub path: String,
}

impl Target {
    /// Parse `http://host[:port]/path` (plain HTTP only: everything runs on loopback).
    pub fn parse(url: &str) -> Result<Target, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("{url}: only http:// URLs are supported"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.is_empty() {
            return Err(format!("{url}: no host"));
        }
        let with_port = if authority
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            authority.to_string()
        } else {
            format!("{authority}:80")
        };
        let addr = with_port
            .to_socket_addrs()
            .map_err(|e| format!("{url}: cannot resolve {with_port}: {e}"))?
            .next()
            .ok_or_else(|| format!("{url}: {with_port} resolves to nothing"))?;
        Ok(Target {
            addr,
            authority: authority.to_string(),
            path: path.to_string(),
        })
    }
}

/// What the load generator needs of a response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Whether the connection may carry the next request.
    pub keep_alive: bool,
}

/// How the body of a response ends (RFC 9112 §6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    None,
    Length(usize),
    Chunked,
    UntilClose,
}

/// The parsed head: status, bytes it took, body framing, keep-alive.
#[derive(Debug)]
struct Head {
    status: u16,
    len: usize,
    framing: Framing,
    keep_alive: bool,
}

/// One keep-alive connection.
#[derive(Debug)]
pub struct Conn {
    stream: TcpStream,
    /// Bytes read and not yet consumed.
    buf: Vec<u8>,
}

impl Conn {
    /// Connect with `TCP_NODELAY` (requests are single small writes).
    pub async fn connect(addr: SocketAddr) -> Result<Conn, ClientError> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            buf: Vec::with_capacity(READ_RESERVE_BYTES),
        })
    }

    /// Send one complete request and read its whole response.
    pub async fn exchange(&mut self, request: &[u8]) -> Result<Response, ClientError> {
        self.stream.write_all(request).await?;
        loop {
            let head = self.read_head().await?;
            self.buf.drain(..head.len);
            // 1xx other than 101 is interim: the final response follows (we never send Expect).
            if (100..200).contains(&head.status) && head.status != 101 {
                continue;
            }
            let keep_alive = self.read_body(head.framing).await? && head.keep_alive;
            return Ok(Response {
                status: head.status,
                keep_alive,
            });
        }
    }

    /// Read more bytes; a clean end of stream is [`ClientError::Closed`].
    async fn fill(&mut self) -> Result<(), ClientError> {
        self.buf.reserve(READ_RESERVE_BYTES);
        if self.stream.read_buf(&mut self.buf).await? == 0 {
            return Err(ClientError::Closed);
        }
        Ok(())
    }

    async fn read_head(&mut self) -> Result<Head, ClientError> {
        loop {
            if let Some(head) = parse_head(&self.buf)? {
                return Ok(head);
            }
            if self.buf.len() > MAX_HEAD_BYTES {
                return Err(ClientError::TooLarge("head"));
            }
            self.fill().await?;
        }
    }

    /// Consume the body; returns false when the connection cannot be reused.
    async fn read_body(&mut self, framing: Framing) -> Result<bool, ClientError> {
        match framing {
            Framing::None => Ok(true),
            Framing::Length(n) => {
                if n > MAX_BODY_BYTES {
                    return Err(ClientError::TooLarge("body"));
                }
                self.take(n).await?;
                Ok(true)
            }
            Framing::Chunked => {
                self.read_chunked().await?;
                Ok(true)
            }
            Framing::UntilClose => {
                loop {
                    match self.fill().await {
                        Err(ClientError::Closed) => break,
                        Err(e) => return Err(e),
                        Ok(()) if self.buf.len() > MAX_BODY_BYTES => {
                            return Err(ClientError::TooLarge("body"));
                        }
                        Ok(()) => {}
                    }
                }
                self.buf.clear();
                Ok(false)
            }
        }
    }

    /// Wait for `n` bytes and consume them.
    async fn take(&mut self, n: usize) -> Result<(), ClientError> {
        while self.buf.len() < n {
            self.fill().await?;
        }
        self.buf.drain(..n);
        Ok(())
    }

    async fn read_chunked(&mut self) -> Result<(), ClientError> {
        let mut total = 0usize;
        loop {
            let (line_len, size) = match httparse::parse_chunk_size(&self.buf) {
                Ok(httparse::Status::Complete((line_len, size))) => (line_len, size),
                Ok(httparse::Status::Partial) if self.buf.len() > MAX_CHUNK_LINE_BYTES => {
                    return Err(ClientError::Malformed("chunk-size line too long".into()));
                }
                Ok(httparse::Status::Partial) => {
                    self.fill().await?;
                    continue;
                }
                Err(_) => return Err(ClientError::Malformed("invalid chunk size".into())),
            };
            self.buf.drain(..line_len);
            if size == 0 {
                return self.read_trailers().await;
            }
            let size = usize::try_from(size).map_err(|_| ClientError::TooLarge("body"))?;
            total = total.saturating_add(size);
            if total > MAX_BODY_BYTES {
                return Err(ClientError::TooLarge("body"));
            }
            while self.buf.len() < size + 2 {
                self.fill().await?;
            }
            if &self.buf[size..size + 2] != b"\r\n" {
                return Err(ClientError::Malformed("chunk not followed by CRLF".into()));
            }
            self.buf.drain(..size + 2);
        }
    }

    /// After the last chunk: either an empty line or trailer fields and an empty line.
    async fn read_trailers(&mut self) -> Result<(), ClientError> {
        loop {
            if self.buf.starts_with(b"\r\n") {
                self.buf.drain(..2);
                return Ok(());
            }
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                self.buf.drain(..i + 4);
                return Ok(());
            }
            if self.buf.len() > MAX_HEAD_BYTES {
                return Err(ClientError::TooLarge("trailers"));
            }
            self.fill().await?;
        }
    }
}

/// Parse a response head if it is complete in `buf`.
fn parse_head(buf: &[u8]) -> Result<Option<Head>, ClientError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(ClientError::Malformed(e.to_string())),
    };
    let status = resp
        .code
        .ok_or_else(|| ClientError::Malformed("no status".into()))?;
    let mut keep_alive = resp.version == Some(1);
    let mut length = None;
    let mut chunked = false;
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
                .ok_or_else(|| ClientError::Malformed("invalid Content-Length".into()))?;
            if length.is_some_and(|m| m != n) {
                return Err(ClientError::Malformed("conflicting Content-Length".into()));
            }
            length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            let last = h.value.rsplit(|b| *b == b',').next().unwrap_or_default();
            chunked = last.trim_ascii().eq_ignore_ascii_case(b"chunked");
        } else if h.name.eq_ignore_ascii_case("connection") {
            for token in h.value.split(|b| *b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    keep_alive = false;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    keep_alive = true;
                }
            }
        }
    }
    let framing = if (100..200).contains(&status) || status == 204 || status == 304 {
        Framing::None
    } else if chunked {
        Framing::Chunked
    } else if let Some(n) = length {
        Framing::Length(n)
    } else {
        Framing::UntilClose
    };
    Ok(Some(Head {
        status,
        len,
        framing,
        keep_alive,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_length_framed_head() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
        let head = parse_head(raw).unwrap().unwrap();
        assert_eq!(
            (head.status, head.framing, head.keep_alive),
            (200, Framing::Length(5), true)
        );
        assert_eq!(head.len, raw.len() - 5);
    }

    #[test]
    fn partial_head_is_none() {
        assert!(
            parse_head(b"HTTP/1.1 200 OK\r\nContent-Le")
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn chunked_wins_and_close_is_seen() {
        let raw = b"HTTP/1.1 402 Payment Required\r\nTransfer-Encoding: gzip, chunked\r\nConnection: close\r\n\r\n";
        let head = parse_head(raw).unwrap().unwrap();
        assert_eq!(
            (head.status, head.framing, head.keep_alive),
            (402, Framing::Chunked, false)
        );
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        assert!(matches!(
            parse_head(b"\x00\x01 nonsense\r\n\r\n"),
            Err(ClientError::Malformed(_))
        ));
        assert!(matches!(
            parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n"),
            Err(ClientError::Malformed(_))
        ));
    }

    #[test]
    fn url_is_split_into_authority_and_path() {
        let t = Target::parse("http://127.0.0.1:9/v1/payment_intents").unwrap();
        assert_eq!(
            (t.authority.as_str(), t.path.as_str(), t.addr.port()),
            ("127.0.0.1:9", "/v1/payment_intents", 9)
        );
        assert!(Target::parse("https://127.0.0.1/").is_err());
    }
}
