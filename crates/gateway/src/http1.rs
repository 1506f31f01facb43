//! Client connections that speak HTTP/1.1: the request nearly every API client sends (a head
//! and no body) served by the gateway's own loop, everything else by hyper.
//!
//! hyper's server costs a proxied request ~9,000 instructions of its own (parse, dispatch,
//! a body channel, encode, flush: bench/gateway/instructions), more than the gateway's whole
//! decision. This loop reads a head and parses it (httparse, as hyper does), and serves it
//! itself only when it is HTTP/1.1, neither `HEAD` nor `CONNECT`, and asks for nothing
//! beyond a plain exchange: no body, no `Upgrade`, no `Expect`, no `TE`. The first head that
//! asks for more, or does not parse, or does not fit, goes to hyper with the rest of the
//! connection, the bytes already read first ([`Served::HandedOver`]), so hyper answers it
//! (a body, `100 Continue`, a WebSocket, `400`, `431`) exactly as it always did. A head
//! that arrives whole but past the limit is refused here with `431` and the connection
//! closed: the limit is the head's, wherever the reads fell.
//!
//! An answer is framed as hyper frames it: `Content-Length` from the body's exact size (or
//! the header the answer carries), else chunked; no body for `204` and `304`; `Date` added
//! when absent; `Connection: close` when the connection closes after it. A client that
//! hangs up abandons its request (hyper's default, no half-close), and the watchdog's
//! orders are obeyed as they are for hyper's connections.

use crate::idle::{Order, Watched};
use axum::body::Body;
use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body::Body as _;
use std::cell::RefCell;
use std::future::{Future, poll_fn};
use std::io;
use std::mem::MaybeUninit;
use std::pin::{Pin, pin};
use std::task::{Context, Poll};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// hyper's limit on a request's header fields.
const MAX_HEADERS: usize = 100;
/// The read buffer's room, as hyper's; a head may grow it to the configured limit.
const READ_ROOM: usize = 8192;
/// The request fields the gateway may insert on the way out: for hyper's clients, three of
/// identity and four of forwarding; one spare.
const ADDED_FIELDS: usize = 8;
/// The most fields a header map kept for the next request holds room for.
const SPARE_FIELDS: usize = 64;
/// The write buffer's room: a usual answer's head and a small body.
const OUT_ROOM: usize = 1024;
/// Body bytes gathered behind the head before they are written.
const GATHER: usize = 64 * 1024;

/// How a connection left the loop.
pub(crate) enum Served<IO> {
    /// Closed: by the client, after an answer that closes it, by the watchdog, or failed.
    Closed,
    /// A head this loop does not serve: hyper serves the connection from here, `read`
    /// (that head, and whatever followed it) first.
    HandedOver { io: IO, read: Bytes },
}

/// Serves `io`'s plain requests with `service` until it closes or a request needs hyper.
/// `max_head` bounds a request head, as hyper's `max_buf_size` does.
pub(crate) async fn serve<IO, S, F>(
    mut io: IO,
    watched: &Watched,
    max_head: usize,
    mut service: S,
) -> Served<IO>
where
    IO: AsyncRead + AsyncWrite + Unpin,
    S: FnMut(Request<Body>) -> F,
    F: Future<Output = Response<Body>>,
{
    let mut read = BytesMut::with_capacity(READ_ROOM);
    let mut out = Vec::with_capacity(OUT_ROOM);
    // The last answer's header map, emptied: the next request's comes in it, as hyper does.
    let mut spare = None;
    // The waker this task last gave the watchdog (see `Watched::order_for`).
    let mut registered = None;
    loop {
        let (request, wants_close) = loop {
            if !read.is_empty() {
                match plain_request(&mut read, max_head, &mut spare) {
                    Head::Plain(request, wants_close) => break (Ok(request), wants_close),
                    // Whole but past the limit (it came in fewer reads than filling the
                    // limit takes): refused as hyper refuses a head past its buffer.
                    Head::TooLarge => break (Err(too_large()), true),
                    Head::Partial if read.len() < max_head => {}
                    Head::Partial | Head::Other => {
                        return Served::HandedOver {
                            io,
                            read: read.freeze(),
                        };
                    }
                }
            }
            let filled = poll_fn(|cx| match watched.order_for(&mut registered, cx) {
                Order::Close => Poll::Ready(Ok(0)),
                // Between requests, a drain closes at once (hyper's graceful shutdown does).
                Order::Drain if read.is_empty() => Poll::Ready(Ok(0)),
                Order::Serve | Order::Drain => fill(&mut io, &mut read, cx),
            })
            .await;
            if !matches!(filled, Ok(n) if n > 0) {
                return Served::Closed;
            }
        };

        watched.begin();
        let answer = match request {
            Err(refusal) => Some(refusal),
            Ok(request) => {
                let mut pending = pin!(service(request));
                poll_fn(|cx| {
                    if let Poll::Ready(response) = pending.as_mut().poll(cx) {
                        return Poll::Ready(Some(response));
                    }
                    if watched.order_for(&mut registered, cx) == Order::Close {
                        return Poll::Ready(None);
                    }
                    // Watch for the client hanging up; bytes it sends meanwhile (a pipelined
                    // request) wait in the buffer, up to a head's worth.
                    while read.len() < max_head {
                        match fill(&mut io, &mut read, cx) {
                            Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Poll::Ready(None),
                            Poll::Ready(Ok(_)) => {}
                            Poll::Pending => break,
                        }
                    }
                    Poll::Pending
                })
                .await
            }
        };
        let Some(answer) = answer else {
            return Served::Closed;
        };
        let keep_alive = !wants_close && watched.current() == Order::Serve;
        let sent = send_answer(&mut io, &mut out, answer, keep_alive, watched, &mut spare).await;
        watched.end();
        if out.capacity() > 4 * OUT_ROOM {
            // A body gathered behind its head: not kept for the connection's life.
            out = Vec::with_capacity(OUT_ROOM);
        }
        match sent {
            Ok(true) => {}
            Ok(false) => {
                // As hyper closes: a FIN (or TLS's close_notify), unless the watchdog gives
                // up on a client that does not take it.
                let _ =
                    poll_fn(|cx| until_closed(Pin::new(&mut io).poll_shutdown(cx), watched, cx))
                        .await;
                return Served::Closed;
            }
            Err(error) => {
                tracing::debug!(%error, "answer not sent");
                return Served::Closed;
            }
        }
    }
}

/// Reads what `io` has into `read`'s spare room.
fn fill<IO: AsyncRead + Unpin>(
    io: &mut IO,
    read: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    if read.capacity() - read.len() < READ_ROOM / 4 {
        read.reserve(READ_ROOM);
    }
    tokio_util::io::poll_read_buf(Pin::new(io), cx, read)
}

// Returned and taken apart at once: boxing the request would cost an allocation a request.
#[allow(clippy::large_enum_variant)]
enum Head {
    /// A request this loop serves, and whether it asked for the connection to close.
    Plain(Request<Body>, bool),
    /// Not all of a head yet.
    Partial,
    /// A whole head longer than the limit.
    TooLarge,
    /// hyper's to serve (or to refuse).
    Other,
}

/// The request at the front of `read`, taken off it if this loop serves it.
fn plain_request(read: &mut BytesMut, max_head: usize, spare: &mut Option<HeaderMap>) -> Head {
    // Left uninitialised: zeroing room for 100 fields costs more than parsing a usual head.
    let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_request_with_uninit_headers(
        &mut parsed,
        read,
        &mut fields,
    ) {
        Ok(httparse::Status::Complete(len)) if len <= max_head => len,
        Ok(httparse::Status::Complete(_)) => return Head::TooLarge,
        Ok(httparse::Status::Partial) => return Head::Partial,
        Err(_) => return Head::Other,
    };
    let (Some(1), Some(method), Some(target)) = (parsed.version, parsed.method, parsed.path) else {
        return Head::Other;
    };
    let method = match Method::from_bytes(method.as_bytes()) {
        Ok(m) if m != Method::HEAD && m != Method::CONNECT => m,
        _ => return Head::Other,
    };
    let mut connection = crate::headers::ConnectionTokens::default();
    let mut lengths = 0;
    for field in parsed.headers.iter() {
        let name = field.name.as_bytes();
        if name.eq_ignore_ascii_case(b"content-length") {
            lengths += 1;
            if lengths > 1 || field.value.trim_ascii() != b"0" {
                return Head::Other;
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding")
            || name.eq_ignore_ascii_case(b"expect")
            || name.eq_ignore_ascii_case(b"upgrade")
            || name.eq_ignore_ascii_case(b"te")
        {
            return Head::Other;
        } else if name.eq_ignore_ascii_case(b"connection") {
            connection.read(field.value);
        }
    }
    // The head's own copy, so that the read buffer is free for the next one while this
    // request is in flight (its values are slices of the copy, not of the buffer).
    let base = read.as_ptr() as usize;
    let head = Bytes::copy_from_slice(&read[..len]);
    let slice_of = |part: &[u8]| {
        let at = part.as_ptr() as usize - base;
        head.slice(at..at + part.len())
    };
    let Ok(uri) = http::Uri::from_maybe_shared(slice_of(target.as_bytes())) else {
        return Head::Other;
    };
    // Room for the fields the gateway may insert: growing the map on the way out would
    // move it whole.
    let mut headers = spare.take().unwrap_or_default();
    headers.reserve(parsed.headers.len() + ADDED_FIELDS);
    for field in parsed.headers.iter() {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(field.name.as_bytes()),
            HeaderValue::from_maybe_shared(slice_of(field.value)),
        ) else {
            return Head::Other;
        };
        headers.append(name, value);
    }
    read.advance(len);
    let mut request = Request::new(Body::empty());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = Version::HTTP_11;
    *request.headers_mut() = headers;
    Head::Plain(request, connection.close)
}

/// The answer to a head past the limit: 431, as hyper gives one past its buffer.
fn too_large() -> Response<Body> {
    let mut answer = Response::new(Body::empty());
    *answer.status_mut() = StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE;
    answer
}

/// How an answer's body goes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Empty,
    Length(u64),
    Chunked,
}

#[derive(Debug, thiserror::Error)]
enum SendError {
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error("the connection was closed by its watchdog")]
    Closed,
    #[error("the answer's body failed")]
    Body,
    #[error("the answer's body is not the length its head says")]
    Length,
    #[error("the answer's Content-Length is not a length")]
    BadLength,
}

/// Writes `answer`; `Ok(true)` when the connection stays open for another request.
async fn send_answer<IO: AsyncWrite + Unpin>(
    io: &mut IO,
    out: &mut Vec<u8>,
    answer: Response<Body>,
    keep_alive: bool,
    watched: &Watched,
    spare: &mut Option<HeaderMap>,
) -> Result<bool, SendError> {
    out.clear();
    let (parts, mut body) = answer.into_parts();
    let length = (!body.is_end_stream()).then(|| body.size_hint().exact());
    let (framing, keep_alive) = encode_head(out, &parts, length, keep_alive)?;
    let mut headers = parts.headers;
    if headers.capacity() <= SPARE_FIELDS {
        headers.clear();
        *spare = Some(headers);
    }
    let mut left = match framing {
        Framing::Length(n) => n,
        Framing::Empty | Framing::Chunked => 0,
    };
    if framing != Framing::Empty {
        loop {
            let frame = match poll_fn(|cx| Poll::Ready(Pin::new(&mut body).poll_frame(cx))).await {
                Poll::Ready(frame) => frame,
                Poll::Pending => {
                    // Nothing more yet: what is gathered goes now, then wait for more.
                    write_watched(io, out, watched).await?;
                    out.clear();
                    poll_fn(|cx| until_closed(Pin::new(&mut body).poll_frame(cx), watched, cx))
                        .await?
                }
            };
            let Some(frame) = frame else { break };
            let Ok(frame) = frame else {
                return Err(SendError::Body);
            };
            let Ok(data) = frame.into_data() else {
                continue; // trailers: only for clients that ask (`TE`), which hyper serves
            };
            if data.is_empty() {
                continue;
            }
            match framing {
                Framing::Length(_) => {
                    left = left
                        .checked_sub(data.len() as u64)
                        .ok_or(SendError::Length)?;
                }
                Framing::Chunked => {
                    use std::io::Write as _;
                    let _ = write!(out, "{:x}\r\n", data.len());
                }
                Framing::Empty => {}
            }
            if out.len() + data.len() <= GATHER {
                out.extend_from_slice(&data);
            } else {
                write_watched(io, out, watched).await?;
                out.clear();
                write_watched(io, &data, watched).await?;
            }
            if framing == Framing::Chunked {
                out.extend_from_slice(b"\r\n");
            }
        }
        if framing == Framing::Chunked {
            out.extend_from_slice(b"0\r\n\r\n");
        }
    }
    write_watched(io, out, watched).await?;
    if left > 0 {
        return Err(SendError::Length);
    }
    Ok(keep_alive)
}

/// Writes `answer`'s status line and head into `out`: how its body is framed, and whether
/// the connection stays open after it. `length` is the body's: `None` when it has ended
/// already, else its exact size if known.
fn encode_head(
    out: &mut Vec<u8>,
    parts: &http::response::Parts,
    length: Option<Option<u64>>,
    keep_alive: bool,
) -> Result<(Framing, bool), SendError> {
    let status = parts.status;
    let reason = parts.extensions.get::<hyper::ext::ReasonPhrase>();
    if status == StatusCode::OK && reason.is_none() {
        out.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
    } else {
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(status.as_str().as_bytes());
        out.push(b' ');
        // A reason must be written: many parsers expect one.
        let canonical = status.canonical_reason().unwrap_or("<none>").as_bytes();
        out.extend_from_slice(reason.map_or(canonical, |r| r.as_bytes()));
        out.extend_from_slice(b"\r\n");
    }
    let bodiless = matches!(status, StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED);
    let mut length_field: Option<&HeaderValue> = None;
    let mut lengths_disagree = false;
    // Whether a `Transfer-Encoding` was written, and whether its last coding is chunked.
    let mut codings: Option<bool> = None;
    let mut connection = crate::headers::ConnectionTokens::default();
    let mut dated = false;
    for (name, value) in &parts.headers {
        match *name {
            // Written below, once the framing is known.
            http::header::CONTENT_LENGTH => {
                match length_field {
                    Some(first) => lengths_disagree |= first != value,
                    None => length_field = Some(value),
                }
                continue;
            }
            http::header::TRANSFER_ENCODING | http::header::TRAILER if bodiless => continue,
            http::header::TRANSFER_ENCODING => {
                let last = value
                    .as_bytes()
                    .rsplit(|b| *b == b',')
                    .next()
                    .unwrap_or(b"");
                codings = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
            }
            http::header::CONNECTION => {
                connection.read(value.as_bytes());
            }
            http::header::DATE => dated = true,
            _ => {}
        }
        put_field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    let framing = if bodiless {
        Framing::Empty
    } else if let Some(chunked_last) = codings {
        if !chunked_last {
            out.extend_from_slice(b"transfer-encoding: chunked\r\n");
        }
        Framing::Chunked
    } else {
        match (length, length_field) {
            (None, _) => {
                out.extend_from_slice(b"content-length: 0\r\n");
                Framing::Empty
            }
            // The body's own length decides, written once: a field the answer carries may
            // say it as a list (`5, 5`), which some clients cannot read.
            (Some(Some(n)), _) => {
                put_field(
                    out,
                    b"content-length",
                    itoa::Buffer::new().format(n).as_bytes(),
                );
                Framing::Length(n)
            }
            (Some(None), Some(field)) => {
                let n = std::str::from_utf8(field.as_bytes())
                    .ok()
                    .and_then(|s| s.trim().parse::<u64>().ok())
                    .filter(|_| !lengths_disagree)
                    .ok_or(SendError::BadLength)?;
                put_field(out, b"content-length", field.as_bytes());
                Framing::Length(n)
            }
            (Some(None), None) => {
                out.extend_from_slice(b"transfer-encoding: chunked\r\n");
                Framing::Chunked
            }
        }
    };
    if !keep_alive && !connection.close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    if !dated {
        out.extend_from_slice(b"date: ");
        put_date(out);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Ok((framing, keep_alive && !connection.close))
}

fn put_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

thread_local! {
    /// The `Date` value of the current second, made once a second per thread.
    static DATE: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

fn put_date(out: &mut Vec<u8>) {
    let now = SystemTime::now();
    let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE.with_borrow_mut(|(made_at, text)| {
        if *made_at != second {
            *made_at = second;
            *text = httpdate::fmt_http_date(now);
        }
        out.extend_from_slice(text.as_bytes());
    });
}

/// Writes all of `bytes` and flushes, unless the watchdog closes the connection first (a
/// client that stopped reading).
async fn write_watched<IO: AsyncWrite + Unpin>(
    io: &mut IO,
    mut bytes: &[u8],
    watched: &Watched,
) -> Result<(), SendError> {
    while !bytes.is_empty() {
        let n = poll_fn(|cx| until_closed(Pin::new(&mut *io).poll_write(cx, bytes), watched, cx))
            .await??;
        if n == 0 {
            return Err(SendError::Io(io::ErrorKind::WriteZero.into()));
        }
        bytes = &bytes[n..];
    }
    Ok(poll_fn(|cx| until_closed(Pin::new(&mut *io).poll_flush(cx), watched, cx)).await??)
}

/// `polled`, or [`SendError::Closed`] once the watchdog closes the connection while it
/// waits (a client that stopped reading, an answer that stopped coming).
fn until_closed<T>(
    polled: Poll<T>,
    watched: &Watched,
    cx: &Context<'_>,
) -> Poll<Result<T, SendError>> {
    match polled {
        Poll::Ready(done) => Poll::Ready(Ok(done)),
        Poll::Pending if watched.order(cx) == Order::Close => Poll::Ready(Err(SendError::Closed)),
        Poll::Pending => Poll::Pending,
    }
}

/// A connection handed to hyper: the bytes this loop read from it come first.
pub(crate) struct Rewind<IO> {
    read: Bytes,
    io: IO,
}

impl<IO> Rewind<IO> {
    pub(crate) fn new(io: IO, read: Bytes) -> Self {
        Rewind { read, io }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Rewind<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.read.is_empty() {
            let n = self.read.len().min(buf.remaining());
            buf.put_slice(&self.read[..n]);
            self.read.advance(n);
            if self.read.is_empty() {
                // Emptied, it would still hold the read buffer it is a slice of.
                self.read = Bytes::new();
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Rewind<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::idle::Watchdog;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::sync::watch;

    fn watched() -> (Arc<Watched>, impl Drop, watch::Sender<bool>) {
        let (stop_tx, stop) = watch::channel(false);
        let minute = Duration::from_secs(60);
        let (dog, task) = Watchdog::start(minute, minute, stop);
        (dog.watch(crate::idle::LateHead::Close), task, stop_tx)
    }

    /// Serves `sent` on an in-memory connection, each request answered by `answer`: what the
    /// loop wrote back, and the bytes it handed over (if it did).
    async fn exchange(
        sent: &[u8],
        answer: impl Fn(Request<Body>) -> Response<Body>,
    ) -> (String, Option<Bytes>) {
        exchange_with(sent, 8192, answer).await
    }

    /// [`exchange`] with heads of `max_head` bytes at most.
    async fn exchange_with(
        sent: &[u8],
        max_head: usize,
        answer: impl Fn(Request<Body>) -> Response<Body>,
    ) -> (String, Option<Bytes>) {
        let (watched, _task, _stop) = watched();
        let (mut client, server) = tokio::io::duplex(1 << 20);
        client.write_all(sent).await.unwrap();
        let served = serve(server, &watched, max_head, |request| {
            std::future::ready(answer(request))
        })
        .await;
        let handed = match served {
            Served::Closed => None,
            Served::HandedOver { io, read } => {
                drop(io);
                Some(read)
            }
        };
        let mut written = Vec::new();
        client.read_to_end(&mut written).await.unwrap();
        (String::from_utf8(written).unwrap(), handed)
    }

    fn path_as_body(request: Request<Body>) -> Response<Body> {
        Response::new(Body::from(request.uri().path().to_owned()))
    }

    #[tokio::test]
    async fn plain_requests_are_served_and_the_first_other_goes_to_hyper_with_what_follows() {
        let rest =
            "POST /c HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\n\r\nabcGET /d HTTP/1.1\r\n\r\n";
        let sent = format!(
            "GET /a HTTP/1.1\r\nhost: x\r\n\r\nGET /b HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n{rest}"
        );
        let (written, handed) = exchange(sent.as_bytes(), path_as_body).await;
        assert_eq!(handed.as_deref(), Some(rest.as_bytes()));
        let answers: Vec<&str> = written.split("HTTP/1.1 200 OK\r\n").skip(1).collect();
        assert_eq!(answers.len(), 2, "{written}");
        for (answer, path) in answers.iter().zip(["/a", "/b"]) {
            assert!(answer.contains("content-length: 2\r\n"), "{answer}");
            assert!(answer.contains("\r\ndate: "), "{answer}");
            assert!(!answer.contains("connection:"), "kept alive: {answer}");
            assert!(answer.ends_with(&format!("\r\n\r\n{path}")), "{answer}");
        }
    }

    #[tokio::test]
    async fn heads_that_ask_for_more_than_a_plain_exchange_go_to_hyper_whole() {
        let others = [
            "GET / HTTP/1.0\r\n\r\n",
            "HEAD / HTTP/1.1\r\n\r\n",
            "CONNECT a:443 HTTP/1.1\r\n\r\n",
            "PUT / HTTP/1.1\r\ncontent-length: 5\r\n\r\nhello",
            "PUT / HTTP/1.1\r\ncontent-length: 0\r\nContent-Length: 0\r\n\r\n",
            "PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            "PUT / HTTP/1.1\r\nexpect: 100-continue\r\ncontent-length: 0\r\n\r\n",
            "GET / HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            "GET / HTTP/1.1\r\nTE: trailers\r\n\r\n",
            "GET / HTTP/1.1\r\nbad name: x\r\n\r\n",
            "GET /\x7f HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nx-a: 1\r\n folded\r\n\r\n",
            "GET / HTTP/1.1\r\nx-a: 1\rx-b: 2\r\n\r\n",
            "GET / HTTP/1.1\r\nx-a : 1\r\n\r\n",
            "\x16\x03\x01\x02\x00\x01\x00\x01\x7c\x03\x03",
        ];
        for sent in others {
            let (written, handed) = exchange(sent.as_bytes(), path_as_body).await;
            assert_eq!(written, "", "{sent:?}");
            assert_eq!(handed.as_deref(), Some(sent.as_bytes()), "{sent:?}");
        }
        // A head past the limit goes to hyper (which answers 431) once the limit is read.
        let huge = format!("GET / HTTP/1.1\r\nx-big: {}\r\n", "a".repeat(9000));
        let (written, handed) = exchange(huge.as_bytes(), path_as_body).await;
        let handed = handed.unwrap();
        assert_eq!(written, "");
        assert!(handed.len() >= 8192 && huge.as_bytes().starts_with(&handed));
        // One past the limit that came whole in the read that crossed it is refused (the
        // limit is the head's, not the reads'): 431 and close, as hyper does; one at the limit
        // is served.
        let head = |size: usize| {
            // 46 bytes around the value.
            let head = format!(
                "GET / HTTP/1.1\r\nconnection: close\r\nx-big: {}\r\n\r\n",
                "a".repeat(size - 46)
            );
            assert_eq!(head.len(), size);
            head
        };
        let (written, handed) = exchange_with(head(12_000).as_bytes(), 10_000, path_as_body).await;
        assert!(
            written.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
            "{written}"
        );
        assert!(written.contains("\r\nconnection: close\r\n"), "{written}");
        assert!(handed.is_none());
        let (written, handed) = exchange_with(head(10_000).as_bytes(), 10_000, path_as_body).await;
        assert!(written.starts_with("HTTP/1.1 200 OK\r\n"), "{written}");
        assert!(handed.is_none());
    }

    /// One request asking to close, answered with `answer`: the answer as written.
    async fn answered(answer: impl Fn() -> Response<Body>) -> String {
        let sent = b"GET / HTTP/1.1\r\nconnection: close\r\n\r\n";
        let (written, handed) = exchange(sent, |_| answer()).await;
        assert!(handed.is_none());
        written
    }

    fn streamed(chunks: &[&'static str]) -> Body {
        let chunks: Vec<Result<Bytes, io::Error>> = chunks
            .iter()
            .map(|c| Ok(Bytes::from_static(c.as_bytes())))
            .collect();
        Body::from_stream(futures_util::stream::iter(chunks))
    }

    #[tokio::test]
    async fn answers_are_framed_as_hyper_frames_them() {
        let known = answered(|| Response::new(Body::from("hello"))).await;
        assert!(known.starts_with("HTTP/1.1 200 OK\r\n"), "{known}");
        assert!(known.contains("\r\ncontent-length: 5\r\n"), "{known}");
        assert!(known.contains("\r\nconnection: close\r\n"), "{known}");
        assert!(known.ends_with("\r\n\r\nhello"), "{known}");

        let empty = answered(|| Response::new(Body::empty())).await;
        assert!(empty.contains("\r\ncontent-length: 0\r\n") && empty.ends_with("\r\n\r\n"));

        let chunked = answered(|| Response::new(streamed(&["ab", "c"]))).await;
        assert!(
            chunked.contains("\r\ntransfer-encoding: chunked\r\n"),
            "{chunked}"
        );
        assert!(
            chunked.ends_with("\r\n\r\n2\r\nab\r\n1\r\nc\r\n0\r\n\r\n"),
            "{chunked}"
        );

        let declared = answered(|| {
            let mut r = Response::new(streamed(&["ab", "c"]));
            r.headers_mut()
                .insert("content-length", HeaderValue::from_static("3"));
            r
        })
        .await;
        assert!(declared.contains("\r\ncontent-length: 3\r\n"), "{declared}");
        assert!(!declared.contains("transfer-encoding"), "{declared}");
        assert!(declared.ends_with("\r\n\r\nabc"), "{declared}");

        // A body of known length is said to be that long once, whatever list came with it.
        let listed = answered(|| {
            let mut r = Response::new(Body::from("hello"));
            r.headers_mut()
                .insert("content-length", HeaderValue::from_static("5, 5"));
            r
        })
        .await;
        assert_eq!(listed.matches("content-length").count(), 1, "{listed}");
        assert!(listed.contains("\r\ncontent-length: 5\r\n"), "{listed}");

        for status in [StatusCode::NO_CONTENT, StatusCode::NOT_MODIFIED] {
            let bodiless = answered(|| {
                let mut r = Response::new(Body::empty());
                *r.status_mut() = status;
                r.headers_mut()
                    .insert("content-length", HeaderValue::from_static("10"));
                r
            })
            .await;
            assert!(
                bodiless.starts_with(&format!("HTTP/1.1 {status}\r\n")),
                "{bodiless}"
            );
            assert!(!bodiless.contains("content-length"), "{bodiless}");
            assert!(bodiless.ends_with("\r\n\r\n"), "{bodiless}");
        }

        let dated = answered(|| {
            let mut r = Response::new(Body::empty());
            *r.status_mut() = StatusCode::FORBIDDEN;
            let epoch = HeaderValue::from_static("Thu, 01 Jan 1970 00:00:00 GMT");
            r.headers_mut().insert("date", epoch);
            r
        })
        .await;
        assert!(dated.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{dated}");
        assert_eq!(dated.matches("date: ").count(), 1, "{dated}");
    }

    #[tokio::test]
    async fn a_client_that_hangs_up_abandons_its_request() {
        let (watched, _task, _stop) = watched();
        let (mut client, server) = tokio::io::duplex(4096);
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let abandoned = Arc::new(AtomicBool::new(false));
        struct Abandoned(Arc<AtomicBool>);
        impl Drop for Abandoned {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let hang_up = async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            drop(client);
        };
        let flag = abandoned.clone();
        let serving = serve(server, &watched, 8192, move |_| {
            let guard = Abandoned(flag.clone());
            async move {
                let _guard = guard;
                std::future::pending::<Response<Body>>().await
            }
        });
        let (served, ()) = tokio::join!(
            tokio::time::timeout(Duration::from_secs(5), serving),
            hang_up
        );
        assert!(matches!(served, Ok(Served::Closed)));
        assert!(abandoned.load(Ordering::SeqCst));
    }
    fn method_and_path_as_body(request: Request<Body>) -> Response<Body> {
        let said = format!("{} {}", request.method(), request.uri().path());
        Response::new(Body::from(said))
    }

    /// Serves `sent`, written in `piece`-byte pieces and then closed, each request answered
    /// with its method and path: what the loop wrote back, and the bytes it handed over (if
    /// it did).
    async fn exchange_in_pieces(sent: &[u8], piece: usize) -> (String, Option<Bytes>) {
        let (watched, _task, _stop) = watched();
        let (client, server) = tokio::io::duplex(1 << 16);
        let (mut client_read, mut client_write) = tokio::io::split(client);
        let send = async {
            for p in sent.chunks(piece) {
                // The loop may have handed the connection over and dropped it already.
                let _ = client_write.write_all(p).await;
                tokio::task::yield_now().await;
            }
            let _ = client_write.shutdown().await;
        };
        let serving = async {
            let served = serve(server, &watched, 8192, |request| {
                std::future::ready(method_and_path_as_body(request))
            })
            .await;
            match served {
                Served::Closed => None,
                Served::HandedOver { io, read } => {
                    drop(io);
                    Some(read)
                }
            }
        };
        let receive = async {
            let mut written = Vec::new();
            let _ = client_read.read_to_end(&mut written).await;
            String::from_utf8_lossy(&written).into_owned()
        };
        let ((), handed, written) = tokio::join!(send, serving, receive);
        (written, handed)
    }

    proptest::proptest! {
        /// Plain requests, then any bytes, in any pieces: every plain request is answered,
        /// in order, and what the loop does not serve goes to hyper as it came, from where
        /// the loop stopped; no byte is lost or served twice, and nothing panics.
        #[test]
        fn what_the_loop_does_not_serve_goes_to_hyper_as_it_came(
            plain in 0usize..4,
            tail in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
            piece in 1usize..64,
        ) {
            let mut sent = Vec::new();
            for i in 0..plain {
                sent.extend_from_slice(format!("GET /{i} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes());
            }
            let served_len = sent.len();
            sent.extend_from_slice(&tail);
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let (written, handed) = runtime.block_on(exchange_in_pieces(&sent, piece));
            let answers: Vec<&str> = written.split("HTTP/1.1 200 OK\r\n").skip(1).collect();
            proptest::prop_assert!(answers.len() >= plain, "{:?}", written);
            for (i, answer) in answers.iter().take(plain).enumerate() {
                let said = format!("\r\n\r\nGET /{i}");
                proptest::prop_assert!(answer.ends_with(&said), "{:?}", answer);
            }
            // Unless the random bytes made a plain request too, the loop stopped where they
            // began: that is where what it hands over starts.
            if let (Some(handed), true) = (handed, answers.len() == plain) {
                proptest::prop_assert!(
                    sent[served_len..].starts_with(&handed),
                    "handed over {:?}, not what followed the served requests", handed
                );
            }
        }
    }
}
