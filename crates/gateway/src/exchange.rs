//! One HTTP/1.1 exchange on a plain upstream connection: the request's head and body out,
//! the response's head in (parsed by `httparse`, as hyper parses it) and its body framed
//! by RFC 9112 §6.3 and streamed as it comes.
//!
//! Why not hyper's client connection: it runs each connection as a task of its own fed
//! through a channel, so every request crossed two task hand-offs and each pooled
//! connection held ~34 KiB (its buffers and the channel's blocks). Here the request's own
//! task reads and writes the socket; an idle connection is its socket and one buffer.
//! WebSocket handshakes still go through hyper (`pool::Http1Pool::send_upgrade`), whose
//! upgrade machinery the tunnel uses.

use axum::body::Body;
use bytes::{Buf as _, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt as _;
use std::future::Future as _;
use std::io::Write as _;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio_util::task::AbortOnDropHandle;

/// The most a response head may take (status line and headers): nginx's default is 4-8
/// KiB; session cookies and CSP headers can be long.
const MAX_HEAD: usize = 64 * 1024;
/// The most header fields in a response head (hyper's default).
const MAX_HEADERS: usize = 100;
/// The most interim (1xx) answers before the final one.
const MAX_INTERIM: usize = 16;
/// A chunk-size line, extensions included.
const MAX_CHUNK_LINE: usize = 4 * 1024;
/// All of a chunked body's trailer lines together (they are read and dropped).
const MAX_TRAILERS: usize = 16 * 1024;
/// What a read for an answer's head asks room for: a usual head and a small body.
const HEAD_READ: usize = 4 * 1024;
/// What a read for more of a body asks room for.
const BODY_READ: usize = 16 * 1024;

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ExchangeError {
    #[error("upstream connection: {0}")]
    Io(#[from] std::io::Error),
    /// The connection ended before any byte of an answer: an idle connection the upstream
    /// closed as the request went out, or an upstream that closes without answering.
    /// The request head could not be written: the connection was gone before it.
    #[error("upstream connection closed before the request went out: {0}")]
    Unsent(#[source] std::io::Error),
    #[error("upstream closed the connection without answering")]
    ClosedBeforeAnswer,
    #[error("upstream closed the connection mid-answer")]
    Incomplete,
    #[error("upstream sent a malformed answer: {0}")]
    Malformed(&'static str),
    /// The answer's framing is not one this proxy forwards (a transfer coding besides
    /// `chunked`, conflicting lengths).
    #[error("upstream answer framed in a way not forwarded: {0}")]
    Framing(&'static str),
    /// The client's request body failed (too long, badly framed, cut off): the client's
    /// error, not the upstream's. Its source says which.
    #[error("request body")]
    Body(#[source] axum::Error),
    #[error("request body length differs from its Content-Length")]
    BodyLength,
    #[error("request upload task ended abnormally")]
    Upload,
}

/// A plain upstream connection between exchanges: its two halves and the bytes read
/// from it not yet consumed (none, for an idle one).
pub(crate) struct Conn {
    read: OwnedReadHalf,
    write: Option<OwnedWriteHalf>,
    buf: BytesMut,
}

impl Conn {
    pub(crate) fn new(stream: TcpStream) -> Self {
        let (read, write) = stream.into_split();
        Conn {
            read,
            write: Some(write),
            buf: BytesMut::new(),
        }
    }

    /// Lets go of the read buffer (empty: the connection is between exchanges).
    pub(crate) fn drop_buffer(&mut self) {
        self.buf = BytesMut::new();
    }

    /// Whether an idle connection may still carry a request: nothing came on it since its
    /// last answer (an end, a reset or stray bytes all mean it may not). Costs no system
    /// call unless the event loop saw the socket become readable.
    pub(crate) fn is_open(&self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        match self.read.as_ref().poll_read_ready(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            // Readiness may be left from the last answer's read: a read tells.
            Poll::Ready(Ok(())) => {
                let mut probe = [0u8; 1];
                matches!(self.read.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
            }
        }
    }

    /// Reads more of the answer into the buffer, with room for `room` bytes at least;
    /// `Ok(0)` at the connection's end.
    fn poll_fill(&mut self, room: usize, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        if self.buf.capacity() - self.buf.len() < 1024 {
            self.buf.reserve(room);
        }
        tokio_util::io::poll_read_buf(Pin::new(&mut self.read), cx, &mut self.buf)
    }
}

/// How the request's body goes out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outgoing {
    None,
    Length(u64),
    Chunked,
}

/// The request head as it goes on the wire, and how its body follows. Header values are
/// `HeaderValue`s and the target a `PathAndQuery`: neither can hold CR or LF, so nothing
/// here can split the head.
pub(crate) struct Head {
    bytes: Vec<u8>,
    method: Method,
    outgoing: Outgoing,
}

impl Head {
    /// `request`'s target is in origin form and its headers are final (hop-by-hop ones
    /// gone, `Host` set) but for `added`, written after them, each once; the framing
    /// header is chosen here from the body.
    pub(crate) fn encode(request: &Request<Body>, added: &[(HeaderName, HeaderValue)]) -> Head {
        let headers = request.headers();
        let body = request.body();
        let declared = single_length(headers);
        let outgoing = if body.is_end_stream() {
            match declared {
                Some(Ok((0, _))) => Outgoing::Length(0),
                _ => Outgoing::None,
            }
        } else {
            match declared {
                Some(Ok((n, _))) => Outgoing::Length(n),
                _ => match body.size_hint().exact() {
                    Some(n) => Outgoing::Length(n),
                    None => Outgoing::Chunked,
                },
            }
        };
        let target = request.uri().path_and_query().map_or("/", |pq| pq.as_str());
        // The head's size, so that it is written without growing: the identity headers
        // and a forwarded token make it a few KiB.
        let size = request.method().as_str().len()
            + target.len()
            + headers
                .iter()
                .chain(added.iter().map(|(n, v)| (n, v)))
                .map(|(n, v)| n.as_str().len() + v.len() + 4)
                .sum::<usize>()
            + 64;
        let mut bytes = Vec::with_capacity(size);
        bytes.extend_from_slice(request.method().as_str().as_bytes());
        bytes.push(b' ');
        bytes.extend_from_slice(target.as_bytes());
        bytes.extend_from_slice(b" HTTP/1.1\r\n");
        for (name, value) in headers.iter().chain(added.iter().map(|(n, v)| (n, v))) {
            if name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING {
                continue;
            }
            bytes.extend_from_slice(name.as_str().as_bytes());
            bytes.extend_from_slice(b": ");
            bytes.extend_from_slice(value.as_bytes());
            bytes.extend_from_slice(b"\r\n");
        }
        match outgoing {
            Outgoing::Length(n) => {
                // Writing to a Vec cannot fail.
                let _ = write!(bytes, "content-length: {n}\r\n");
            }
            Outgoing::Chunked => bytes.extend_from_slice(b"transfer-encoding: chunked\r\n"),
            // A POST with no body still says so: some servers refuse one without a length.
            Outgoing::None
                if matches!(
                    *request.method(),
                    Method::POST | Method::PUT | Method::PATCH
                ) =>
            {
                bytes.extend_from_slice(b"content-length: 0\r\n");
            }
            Outgoing::None => {}
        }
        bytes.extend_from_slice(b"\r\n");
        Head {
            bytes,
            method: request.method().clone(),
            outgoing,
        }
    }

    /// Whether the request has a body to send after the head.
    pub(crate) fn has_body(&self) -> bool {
        !matches!(self.outgoing, Outgoing::None | Outgoing::Length(0))
    }

    pub(crate) fn method(&self) -> &Method {
        &self.method
    }
}

/// The one length `headers` declare, and whether it was said more than once: `None`
/// without `Content-Length`, `Some(Err)` when its values are not all the same decimal
/// number (RFC 9110 §8.6 allows repeats of one).
fn single_length(headers: &HeaderMap) -> Option<Result<(u64, bool), ()>> {
    let mut found: Option<u64> = None;
    let mut repeated = false;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        for part in value.as_bytes().split(|&b| b == b',') {
            let part = part.trim_ascii();
            if part.is_empty() || part.len() > 19 || !part.iter().all(u8::is_ascii_digit) {
                return Some(Err(()));
            }
            let n = part.iter().fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'));
            match found {
                Some(m) if m != n => return Some(Err(())),
                Some(_) => repeated = true,
                None => found = Some(n),
            }
        }
    }
    found.map(|n| Ok((n, repeated)))
}

/// Sends the head of a request without a body and reads the answer's head, its headers
/// into `room` when there is one (see [`Room`]).
pub(crate) async fn without_body(
    conn: &mut Conn,
    head: &Head,
    room: &mut Room,
) -> Result<Answer, ExchangeError> {
    let Some(write) = conn.write.as_mut() else {
        return Err(ExchangeError::Upload);
    };
    write
        .write_all(&head.bytes)
        .await
        .map_err(ExchangeError::Unsent)?;
    let mut reading = Reading::default();
    std::future::poll_fn(|cx| poll_answer(conn, &head.method, &mut reading, room, cx)).await
}

/// An emptied header map to hold an answer's headers: the request's own, once its head is
/// encoded. hyper hands a response's map back as the connection's next request's, so one
/// allocation serves all of a connection's requests, grown once to fit what the gateway
/// adds to them; without it, every answer allocated a map and every request grew one. (A
/// connection keeps the room of its largest request, which hyper's 100-field limit bounds.)
pub(crate) struct Room(Option<HeaderMap>);

impl Room {
    pub(crate) fn new(mut headers: HeaderMap) -> Room {
        headers.clear();
        Room(Some(headers))
    }

    fn take(&mut self, fields: usize) -> HeaderMap {
        match self.0.take() {
            Some(mut headers) => {
                headers.reserve(fields);
                headers
            }
            None => HeaderMap::with_capacity(fields),
        }
    }
}

/// Sends a request with a body: the head and the body from a task of their own, so that
/// an upstream may answer (and its answer stream back) while the body still goes out. The
/// answer's head is read here meanwhile. A failure of the client's body before the answer
/// began is returned as [`ExchangeError::Body`].
pub(crate) async fn with_body(
    mut conn: Conn,
    head: Head,
    body: Body,
    mut room: Room,
) -> Result<(Conn, Answer, Option<Upload>), ExchangeError> {
    let write = conn.write.take().ok_or(ExchangeError::Upload)?;
    let method = head.method.clone();
    let mut upload = Some(AbortOnDropHandle::new(tokio::spawn(upload(
        write, head, body,
    ))));
    let mut upload_failed = false;
    let mut reading = Reading::default();
    let answer = std::future::poll_fn(|cx| {
        if let Some(task) = upload.as_mut() {
            if let Poll::Ready(joined) = Pin::new(task).poll(cx) {
                upload = None;
                match joined {
                    Ok(Ok(write)) => conn.write = Some(write),
                    Ok(Err(ExchangeError::Body(e))) => {
                        return Poll::Ready(Err(ExchangeError::Body(e)));
                    }
                    Ok(Err(ExchangeError::BodyLength)) => {
                        return Poll::Ready(Err(ExchangeError::BodyLength));
                    }
                    // The upstream may have closed its end having answered already (an
                    // early refusal): its answer is still read, the connection not reused.
                    Ok(Err(_)) | Err(_) => upload_failed = true,
                }
            }
        }
        poll_answer(&mut conn, &method, &mut reading, &mut room, cx)
    })
    .await;
    // On an error the upload, if still going, stops as its handle drops.
    let mut answer = answer?;
    if upload_failed {
        answer.reusable = false;
    }
    Ok((conn, answer, upload))
}

type UploadResult = Result<OwnedWriteHalf, ExchangeError>;
/// The task sending a request's body: dropped, it stops (with the exchange it serves).
pub(crate) type Upload = AbortOnDropHandle<UploadResult>;

/// Sends the head, with the body's first bytes when the client sent them with it: a body
/// that fails at once (a malformed first chunk) then leaves nothing at the upstream, as a
/// request the gateway refuses writes nothing. A body still to come does not hold the head
/// back (the upstream may answer from the head alone). The length is held to what the
/// head declared.
async fn upload(mut write: OwnedWriteHalf, head: Head, mut body: Body) -> UploadResult {
    let mut unsent_head = Some(Bytes::from(head.bytes));
    let mut sent: u64 = 0;
    // The client's connection task decodes what it has already read once asked; one turn
    // of the event loop lets it.
    let mut first = tokio::select! {
        biased;
        frame = body.frame() => Some(frame),
        () = tokio::task::yield_now() => None,
    };
    if first.is_none() {
        let mut head = unsent_head.take().unwrap_or_default();
        write.write_all_buf(&mut head).await?;
    }
    loop {
        let frame = match first.take() {
            Some(frame) => frame,
            None => body.frame().await,
        };
        let Some(frame) = frame else {
            break;
        };
        let frame = frame.map_err(ExchangeError::Body)?;
        // Trailers are dropped: `Trailer` is hop-by-hop and went with the head.
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if data.is_empty() {
            continue;
        }
        sent += data.len() as u64;
        let (size_line, after) = match head.outgoing {
            Outgoing::Length(n) if sent > n => return Err(ExchangeError::BodyLength),
            Outgoing::Length(_) => (Bytes::new(), Bytes::new()),
            Outgoing::Chunked => (
                Bytes::from(format!("{:X}\r\n", data.len())),
                Bytes::from_static(b"\r\n"),
            ),
            Outgoing::None => return Err(ExchangeError::BodyLength),
        };
        let mut out = unsent_head
            .take()
            .unwrap_or_default()
            .chain(size_line)
            .chain(data)
            .chain(after);
        write.write_all_buf(&mut out).await?;
    }
    if let Outgoing::Length(n) = head.outgoing {
        if sent != n {
            return Err(ExchangeError::BodyLength);
        }
    }
    let end = match head.outgoing {
        Outgoing::Chunked => Bytes::from_static(b"0\r\n\r\n"),
        _ => Bytes::new(),
    };
    let mut out = unsent_head.take().unwrap_or_default().chain(end);
    write.write_all_buf(&mut out).await?;
    Ok(write)
}

/// An answer's head, and how its body is framed.
pub(crate) struct Answer {
    pub(crate) response: Response<()>,
    framing: Framing,
    /// Whether the connection may carry another request once this body is read.
    reusable: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Empty,
    Length(u64),
    Chunked,
    UntilClose,
}

/// How far the answer to one request has come, across polls.
#[derive(Default)]
struct Reading {
    /// Any byte of an answer (interim ones included) has come.
    seen_any: bool,
    interim: usize,
}

/// Reads until the final (non-1xx) answer's head is in, and parses it.
fn poll_answer(
    conn: &mut Conn,
    method: &Method,
    reading: &mut Reading,
    room: &mut Room,
    cx: &mut Context<'_>,
) -> Poll<Result<Answer, ExchangeError>> {
    loop {
        if !conn.buf.is_empty() {
            match parse_answer(&mut conn.buf, method, room)? {
                Some(Parsed::Interim) => {
                    reading.interim += 1;
                    if reading.interim > MAX_INTERIM {
                        return Poll::Ready(Err(ExchangeError::Malformed("too many 1xx answers")));
                    }
                    continue;
                }
                Some(Parsed::Final(answer)) => return Poll::Ready(Ok(answer)),
                None if conn.buf.len() >= MAX_HEAD => {
                    return Poll::Ready(Err(ExchangeError::Malformed("answer head too large")));
                }
                None => {}
            }
        }
        match conn.poll_fill(HEAD_READ, cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Ok(0)) if reading.seen_any => {
                return Poll::Ready(Err(ExchangeError::Incomplete));
            }
            Poll::Ready(Ok(0)) => return Poll::Ready(Err(ExchangeError::ClosedBeforeAnswer)),
            Poll::Ready(Ok(_)) => reading.seen_any = true,
            Poll::Ready(Err(e)) if !reading.seen_any && lost(&e) => {
                return Poll::Ready(Err(ExchangeError::ClosedBeforeAnswer));
            }
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e.into())),
        }
    }
}

/// The errors that say the connection itself went away (not a refusal of the request).
fn lost(error: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    matches!(
        error.kind(),
        ErrorKind::ConnectionReset | ErrorKind::BrokenPipe | ErrorKind::ConnectionAborted
    )
}

enum Parsed {
    Interim,
    Final(Answer),
}

/// Parses an answer head at the front of `buf`, consuming it once complete.
fn parse_answer(
    buf: &mut BytesMut,
    method: &Method,
    room: &mut Room,
) -> Result<Option<Parsed>, ExchangeError> {
    // Left uninitialised: zeroing room for 100 fields cost more than parsing a usual head.
    let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut parsed,
        buf,
        &mut fields,
    ) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(ExchangeError::Malformed("too many header fields"));
        }
        Err(_) => return Err(ExchangeError::Malformed("unparseable answer head")),
    };
    let code = parsed.code.unwrap_or(0);
    let status =
        StatusCode::from_u16(code).map_err(|_| ExchangeError::Malformed("bad status code"))?;
    let version = match parsed.version {
        Some(1) => Version::HTTP_11,
        Some(0) => Version::HTTP_10,
        _ => return Err(ExchangeError::Malformed("bad version")),
    };
    if status.is_informational() && status != StatusCode::SWITCHING_PROTOCOLS {
        buf.advance(len);
        return Ok(Some(Parsed::Interim));
    }
    // Header values become slices of the head's bytes, not copies: note where each lies,
    // then split the head off the buffer.
    let base = buf.as_ptr() as usize;
    let mut named = Vec::with_capacity(parsed.headers.len());
    let mut connection = crate::headers::ConnectionTokens::default();
    for field in parsed.headers.iter() {
        // A `Connection` naming only `keep-alive` or `close` (as nearly every answer's
        // does) is this hop's alone: read here, not passed on to be removed later.
        if field.name.eq_ignore_ascii_case("connection") && !connection.read(field.value) {
            continue;
        }
        let name = HeaderName::from_bytes(field.name.as_bytes())
            .map_err(|_| ExchangeError::Malformed("bad header name"))?;
        let at = field.value.as_ptr() as usize - base;
        named.push((name, at, at + field.value.len()));
    }
    let head_bytes = buf.split_to(len).freeze();
    let mut headers = room.take(named.len());
    for (name, start, end) in named {
        let value = HeaderValue::from_maybe_shared(head_bytes.slice(start..end))
            .map_err(|_| ExchangeError::Malformed("bad header value"))?;
        headers.append(name, value);
    }
    let mut reusable = connection.keep_alive(version);
    let framing = if status == StatusCode::SWITCHING_PROTOCOLS {
        reusable = false;
        Framing::Empty
    } else if *method == Method::HEAD
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        Framing::Empty
    } else if headers.contains_key(header::TRANSFER_ENCODING) {
        if version == Version::HTTP_10 {
            return Err(ExchangeError::Framing("Transfer-Encoding in HTTP/1.0"));
        }
        let named = headers
            .get_all(header::TRANSFER_ENCODING)
            .iter()
            .any(|v| !v.as_bytes().trim_ascii().is_empty());
        if !named || !crate::headers::only_chunked(&headers) {
            return Err(ExchangeError::Framing("a transfer coding besides chunked"));
        }
        // Both framings at once (RFC 9112 §6.3: the coding wins): read, but not trusted
        // with another request.
        if headers.contains_key(header::CONTENT_LENGTH) {
            reusable = false;
        }
        Framing::Chunked
    } else {
        match single_length(&headers) {
            None => {
                reusable = false;
                Framing::UntilClose
            }
            Some(Ok((n, repeated))) => {
                // A length said more than once goes on said once (RFC 9110 §8.6): clients
                // such as Python's http.client cannot read a list.
                if repeated {
                    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
                }
                if n == 0 {
                    Framing::Empty
                } else {
                    Framing::Length(n)
                }
            }
            Some(Err(())) => return Err(ExchangeError::Framing("bad Content-Length")),
        }
    };
    let mut response = Response::new(());
    *response.status_mut() = status;
    *response.version_mut() = version;
    *response.headers_mut() = headers;
    Ok(Some(Parsed::Final(Answer {
        response,
        framing,
        reusable,
    })))
}

/// Where an answer's body is in its framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decode {
    Length(u64),
    ChunkSize,
    ChunkData(u64),
    ChunkEnd,
    Trailers(usize),
    UntilClose,
    Done,
}

/// Where a connection goes once an answer's body is read to its end (its pool).
pub(crate) trait Release: Send + Unpin + 'static {
    fn release(self, conn: Conn);
}

/// An answer's body read from its connection as it is polled. Read to the end, the
/// connection goes back through `release` if it may carry another request; dropped
/// before, the connection is closed with it (its remaining bytes would precede the next
/// answer).
pub(crate) struct AnswerBody<R> {
    conn: Option<Conn>,
    decode: Decode,
    reusable: bool,
    upload: Option<Upload>,
    release: Option<R>,
}

impl<R: Release> AnswerBody<R> {
    /// The body of `answer` on `conn`. When it is already whole in the buffer (the usual
    /// small answer) the connection is released at once and the body returned as bytes.
    pub(crate) fn new(
        mut conn: Conn,
        answer: &Answer,
        upload: Option<Upload>,
        release: R,
    ) -> Result<Bytes, AnswerBody<R>> {
        let decode = match answer.framing {
            Framing::Empty => Decode::Done,
            Framing::Length(n) => {
                if conn.buf.len() as u64 >= n && upload.is_none() {
                    // `n` fits in the buffer, so in a usize.
                    let body = conn.buf.split_to(n as usize).freeze();
                    if answer.reusable && conn.buf.is_empty() {
                        release.release(conn);
                    }
                    return Ok(body);
                }
                Decode::Length(n)
            }
            Framing::Chunked => Decode::ChunkSize,
            Framing::UntilClose => Decode::UntilClose,
        };
        if decode == Decode::Done && upload.is_none() {
            if answer.reusable && conn.buf.is_empty() {
                release.release(conn);
            }
            return Ok(Bytes::new());
        }
        Err(AnswerBody {
            conn: Some(conn),
            decode,
            reusable: answer.reusable,
            upload,
            release: Some(release),
        })
    }

    /// The body is read: the connection goes back if nothing stands against it.
    fn finish(&mut self) {
        self.decode = Decode::Done;
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        if let Some(task) = self.upload.take() {
            // An upload still going (or failed) leaves the connection unusable: the next
            // request would wait behind it.
            if !task.is_finished() {
                return;
            }
            match futures_util::FutureExt::now_or_never(task) {
                Some(Ok(Ok(write))) => conn.write = Some(write),
                _ => return,
            }
        }
        if self.reusable && conn.buf.is_empty() {
            if let Some(release) = self.release.take() {
                release.release(conn);
            }
        }
    }
}

impl<R: Release> HttpBody for AnswerBody<R> {
    type Data = Bytes;
    type Error = ExchangeError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ExchangeError>>> {
        let this = &mut *self;
        loop {
            if this.decode == Decode::Done {
                this.finish();
                return Poll::Ready(None);
            }
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match step(&mut this.decode, &mut conn.buf) {
                Ok(Step::Data(data)) => {
                    // hyper stops polling a body that says it has ended: the connection
                    // goes back now, not on a poll that never comes.
                    if this.decode == Decode::Done {
                        this.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Ok(Step::Again) => continue,
                Ok(Step::NeedMore) => {}
                Err(e) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(e)));
                }
            }
            match conn.poll_fill(BODY_READ, cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0)) if this.decode == Decode::UntilClose => {
                    this.reusable = false;
                    this.decode = Decode::Done;
                }
                Poll::Ready(Ok(0)) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(ExchangeError::Incomplete)));
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(e.into())));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.decode == Decode::Done
    }

    fn size_hint(&self) -> SizeHint {
        match self.decode {
            Decode::Length(n) => SizeHint::with_exact(n),
            Decode::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

enum Step {
    Data(Bytes),
    /// The state moved on: step again.
    Again,
    /// The buffer holds too little: read more.
    NeedMore,
}

/// One step of decoding a body from `buf`.
fn step(decode: &mut Decode, buf: &mut BytesMut) -> Result<Step, ExchangeError> {
    match *decode {
        Decode::Done => Ok(Step::Again),
        Decode::Length(left) | Decode::ChunkData(left) => {
            if buf.is_empty() {
                return Ok(Step::NeedMore);
            }
            let take = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
            let data = buf.split_to(take).freeze();
            let left = left - take as u64;
            *decode = match (*decode, left) {
                (Decode::Length(_), 0) => Decode::Done,
                (Decode::Length(_), _) => Decode::Length(left),
                (_, 0) => Decode::ChunkEnd,
                _ => Decode::ChunkData(left),
            };
            Ok(Step::Data(data))
        }
        Decode::ChunkSize => match httparse::parse_chunk_size(buf) {
            Ok(httparse::Status::Complete((used, _))) if used > MAX_CHUNK_LINE => {
                Err(ExchangeError::Malformed("chunk size line too long"))
            }
            Ok(httparse::Status::Complete((used, size))) => {
                buf.advance(used);
                *decode = if size == 0 {
                    Decode::Trailers(0)
                } else {
                    Decode::ChunkData(size)
                };
                Ok(Step::Again)
            }
            Ok(httparse::Status::Partial) if buf.len() > MAX_CHUNK_LINE => {
                Err(ExchangeError::Malformed("chunk size line too long"))
            }
            Ok(httparse::Status::Partial) => Ok(Step::NeedMore),
            Err(_) => Err(ExchangeError::Malformed("bad chunk size")),
        },
        Decode::ChunkEnd => {
            if buf.len() < 2 {
                return Ok(Step::NeedMore);
            }
            if &buf[..2] != b"\r\n" {
                return Err(ExchangeError::Malformed("chunk not followed by CRLF"));
            }
            buf.advance(2);
            *decode = Decode::ChunkSize;
            Ok(Step::Again)
        }
        Decode::Trailers(seen) => match buf.windows(2).position(|w| w == b"\r\n") {
            Some(0) => {
                buf.advance(2);
                *decode = Decode::Done;
                Ok(Step::Again)
            }
            Some(end) => {
                let seen = seen + end + 2;
                if seen > MAX_TRAILERS {
                    return Err(ExchangeError::Malformed("trailers too large"));
                }
                buf.advance(end + 2);
                *decode = Decode::Trailers(seen);
                Ok(Step::Again)
            }
            None if seen + buf.len() > MAX_TRAILERS => {
                Err(ExchangeError::Malformed("trailers too large"))
            }
            None => Ok(Step::NeedMore),
        },
        Decode::UntilClose => {
            if buf.is_empty() {
                return Ok(Step::NeedMore);
            }
            Ok(Step::Data(buf.split().freeze()))
        }
    }
}

/// Joins an answer's head and body into the response handed to the client's side.
pub(crate) fn response<R: Release>(
    answer: Answer,
    body: Result<Bytes, AnswerBody<R>>,
) -> Response<Body> {
    let body = match body {
        Ok(bytes) if bytes.is_empty() => Body::empty(),
        Ok(bytes) => Body::from(bytes),
        Err(streaming) => Body::new(streaming),
    };
    answer.response.map(|()| body)
}

impl Answer {
    /// Whether no byte of a body follows the head.
    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.framing == Framing::Empty
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(head: &str, method: Method) -> Result<Answer, ExchangeError> {
        let mut buf = BytesMut::from(head);
        loop {
            match parse_answer(&mut buf, &method, &mut Room(None))? {
                Some(Parsed::Final(answer)) => return Ok(answer),
                Some(Parsed::Interim) => continue,
                None => panic!("partial head"),
            }
        }
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let get = || Method::GET;
        let a = parse("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n", get()).unwrap();
        assert_eq!((a.framing, a.reusable), (Framing::Length(5), true));
        // A length said more than once is one length, forwarded said once.
        for head in [
            "HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\ncontent-length: 5\r\n\r\n",
        ] {
            let a = parse(head, get()).unwrap();
            assert_eq!(a.framing, Framing::Length(5));
            let said: Vec<_> = a
                .response
                .headers()
                .get_all("content-length")
                .iter()
                .collect();
            assert_eq!(said, ["5"], "{head:?}");
        }
        let a = parse("HTTP/1.1 200 OK\r\nContent-Length: 0, 0\r\n\r\n", get()).unwrap();
        assert_eq!(a.framing, Framing::Empty);
        assert_eq!(a.response.headers()["content-length"], "0");
        assert!(matches!(
            parse(
                "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\n",
                get()
            ),
            Err(ExchangeError::Framing(_))
        ));
        assert!(matches!(
            parse("HTTP/1.1 200 OK\r\ncontent-length: +5\r\n\r\n", get()),
            Err(ExchangeError::Framing(_))
        ));
        let a = parse(
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
            get(),
        )
        .unwrap();
        assert_eq!((a.framing, a.reusable), (Framing::Chunked, true));
        // Both: the coding frames it, and the connection is not trusted again.
        let a = parse(
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 5\r\n\r\n",
            get(),
        )
        .unwrap();
        assert_eq!((a.framing, a.reusable), (Framing::Chunked, false));
        assert!(matches!(
            parse(
                "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n",
                get()
            ),
            Err(ExchangeError::Framing(_))
        ));
        assert!(matches!(
            parse(
                "HTTP/1.0 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
                get()
            ),
            Err(ExchangeError::Framing(_))
        ));
        let a = parse("HTTP/1.1 200 OK\r\n\r\n", get()).unwrap();
        assert_eq!((a.framing, a.reusable), (Framing::UntilClose, false));
        let a = parse(
            "HTTP/1.1 304 Not Modified\r\ncontent-length: 9\r\n\r\n",
            get(),
        )
        .unwrap();
        assert!(a.is_empty() && a.reusable);
        let a = parse("HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n", Method::HEAD).unwrap();
        assert!(a.is_empty() && a.reusable);
        let a = parse(
            "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 1\r\n\r\n",
            get(),
        )
        .unwrap();
        assert!(!a.reusable);
        let a = parse("HTTP/1.0 200 OK\r\ncontent-length: 1\r\n\r\n", get()).unwrap();
        assert!(!a.reusable);
        let a = parse(
            "HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\ncontent-length: 1\r\n\r\n",
            get(),
        )
        .unwrap();
        assert!(a.reusable);
        // `Connection` naming only this hop's keep-alive or close is read and dropped; one
        // naming other fields stays, for those fields to be removed with it.
        let a = parse(
            "HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nconnection: Keep-Alive, CLOSE\r\ncontent-length: 1\r\n\r\n",
            get(),
        )
        .unwrap();
        assert!(!a.reusable && !a.response.headers().contains_key(header::CONNECTION));
        let a = parse(
            "HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nConnection: x-private\r\nx-private: 1\r\ncontent-length: 1\r\n\r\n",
            get(),
        )
        .unwrap();
        let kept: Vec<_> = a
            .response
            .headers()
            .get_all(header::CONNECTION)
            .iter()
            .collect();
        assert!(a.reusable && kept == ["x-private"]);
        // Interim answers are passed over; a 101 ends the exchange and the connection.
        let a = parse(
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\n",
            get(),
        )
        .unwrap();
        assert_eq!(a.response.status(), StatusCode::CREATED);
        let a = parse(
            "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\r\n",
            get(),
        )
        .unwrap();
        assert!(a.is_empty() && !a.reusable);
    }

    #[test]
    fn malformed_heads_are_refused() {
        for head in [
            "HTTP/1.1 200 OK\r\nbad header\r\n\r\n",
            "HTTP/1.1 2000 OK\r\n\r\n",
            "HTTP/2.0 200 OK\r\n\r\n",
            "HTTP/1.1 200 OK\r\nx: a\rb\r\n\r\n",
            "HTTP/1.1 200 OK\r\nx\0y: a\r\n\r\n",
            "HTTP/1.1 200 OK\r\n folded: a\r\n\r\n",
        ] {
            assert!(parse(head, Method::GET).is_err(), "{head:?}");
        }
        let many: String = (0..=MAX_HEADERS).map(|i| format!("x-{i}: v\r\n")).collect();
        assert!(parse(&format!("HTTP/1.1 200 OK\r\n{many}\r\n"), Method::GET).is_err());
    }

    /// Decodes `wire` fed to the decoder in pieces of `piece` bytes.
    fn decode(framing: Decode, wire: &[u8], piece: usize) -> Result<(Vec<u8>, usize), String> {
        let mut decode = framing;
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut fed = 0;
        loop {
            match step(&mut decode, &mut buf).map_err(|e| e.to_string())? {
                Step::Data(d) => out.extend_from_slice(&d),
                Step::Again if decode == Decode::Done => return Ok((out, buf.len())),
                Step::Again => {}
                Step::NeedMore => {
                    if fed == wire.len() {
                        return Err("incomplete".into());
                    }
                    let end = (fed + piece).min(wire.len());
                    buf.extend_from_slice(&wire[fed..end]);
                    fed = end;
                }
            }
        }
    }

    #[test]
    fn chunked_bodies_decode_in_any_pieces() {
        let wire =
            b"5;ext=1\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nx-trailer: t\r\n\r\n";
        for piece in [1, 2, 3, 7, wire.len()] {
            let (body, left) = decode(Decode::ChunkSize, wire, piece).unwrap();
            assert_eq!(body, b"helloabcdefghijklmnopqrstuvwxyz", "piece {piece}");
            assert_eq!(left, 0);
        }
        // Bytes past the end stay in the buffer (and keep the connection from reuse).
        let mut extra = wire.to_vec();
        extra.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
        let (_, left) = decode(Decode::ChunkSize, &extra, extra.len()).unwrap();
        assert_eq!(left, 17);
        for bad in [
            &b"5\r\nhelloXX0\r\n\r\n"[..],
            b"zz\r\n",
            b"FFFFFFFFFFFFFFFFFF\r\n",
            b"-1\r\n",
        ] {
            assert!(decode(Decode::ChunkSize, bad, 64).is_err(), "{bad:?}");
        }
        let long_ext = format!("5;{}\r\nhello\r\n0\r\n\r\n", "e".repeat(MAX_CHUNK_LINE));
        assert!(decode(Decode::ChunkSize, long_ext.as_bytes(), 512).is_err());
        let long_trailers = format!("0\r\n{}\r\n\r\n", "t: v\r\n".repeat(MAX_TRAILERS / 4));
        assert!(decode(Decode::ChunkSize, long_trailers.as_bytes(), 512).is_err());
        // Cut short: never a clean end.
        assert!(decode(Decode::ChunkSize, b"5\r\nhel", 64).is_err());
    }

    #[test]
    fn length_bodies_stop_at_their_length() {
        let (body, left) = decode(Decode::Length(5), b"helloEXTRA", 3).unwrap();
        assert_eq!(body, b"hello");
        assert_eq!(left, 1); // the rest of the piece that held the end
        assert!(decode(Decode::Length(5), b"hel", 64).is_err());
    }

    fn request(method: Method, headers: &[(&str, &str)], body: Body) -> Request<Body> {
        let mut r = Request::builder().method(method).uri("/p?q=1");
        for (n, v) in headers {
            r = r.header(*n, *v);
        }
        r.body(body).unwrap()
    }

    #[test]
    fn request_heads_carry_one_framing() {
        let text = |h: &Head| String::from_utf8(h.bytes.clone()).unwrap();
        let h = Head::encode(&request(Method::GET, &[("host", "up")], Body::empty()), &[]);
        assert_eq!(text(&h), "GET /p?q=1 HTTP/1.1\r\nhost: up\r\n\r\n");
        assert!(!h.has_body());
        let h = Head::encode(
            &request(Method::POST, &[("host", "up")], Body::empty()),
            &[],
        );
        assert_eq!(
            text(&h),
            "POST /p?q=1 HTTP/1.1\r\nhost: up\r\ncontent-length: 0\r\n\r\n"
        );
        let added = [(
            HeaderName::from_static("x-forwarded-proto"),
            HeaderValue::from_static("https"),
        )];
        let h = Head::encode(
            &request(
                Method::POST,
                &[("host", "up"), ("content-length", "4")],
                Body::from("vote"),
            ),
            &added,
        );
        assert_eq!(h.outgoing, Outgoing::Length(4));
        assert!(
            text(&h).ends_with("host: up\r\nx-forwarded-proto: https\r\ncontent-length: 4\r\n\r\n")
        );
        let streamed = Body::from_stream(futures_util::stream::iter([Ok::<_, std::io::Error>(
            Bytes::from("x"),
        )]));
        let h = Head::encode(
            &request(
                Method::POST,
                &[("host", "up"), ("transfer-encoding", "chunked")],
                streamed,
            ),
            &[],
        );
        assert_eq!(h.outgoing, Outgoing::Chunked);
        assert_eq!(text(&h).matches("transfer-encoding").count(), 1);
    }

    proptest::proptest! {
        /// Whatever an upstream sends, in whatever pieces, decoding ends (a body, an
        /// error, or a wait for more) and never panics; so does parsing it as a head.
        #[test]
        fn any_bytes_in_any_pieces_decode_without_panic(
            wire in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512),
            piece in 1usize..64,
            chunked in proptest::prelude::any::<bool>(),
        ) {
            let framing = if chunked { Decode::ChunkSize } else { Decode::Length(100) };
            let _ = decode(framing, &wire, piece);
            let _ = parse_answer(&mut BytesMut::from(&wire[..]), &Method::GET, &mut Room(None));
        }

        /// A chunked body, cut into any chunks (with extensions and trailers), decodes to
        /// itself in any pieces, and the bytes after it are left for the connection to
        /// answer for.
        #[test]
        fn chunked_bodies_round_trip(
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2048),
            cuts in proptest::collection::vec(1usize..300, 1..20),
            piece in 1usize..97,
            ext in proptest::prelude::any::<bool>(),
            trailers in 0usize..3,
            after in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..8),
        ) {
            let mut wire = Vec::new();
            let mut rest = &body[..];
            let mut cut = cuts.iter().cycle();
            while !rest.is_empty() {
                let n = (*cut.next().unwrap_or(&1)).min(rest.len());
                let ext = if ext { ";name=\"v\"" } else { "" };
                wire.extend_from_slice(format!("{n:x}{ext}\r\n").as_bytes());
                wire.extend_from_slice(&rest[..n]);
                wire.extend_from_slice(b"\r\n");
                rest = &rest[n..];
            }
            wire.extend_from_slice(b"0\r\n");
            for t in 0..trailers {
                wire.extend_from_slice(format!("x-t{t}: v\r\n").as_bytes());
            }
            wire.extend_from_slice(b"\r\n");
            let end = wire.len();
            wire.extend_from_slice(&after);
            let (decoded, _) = decode(Decode::ChunkSize, &wire[..end], piece).unwrap();
            proptest::prop_assert_eq!(&decoded, &body);
            // With bytes after the end, they stay in the buffer: the body is the same.
            let (decoded, left) = decode(Decode::ChunkSize, &wire, wire.len()).unwrap();
            proptest::prop_assert_eq!(&decoded, &body);
            proptest::prop_assert_eq!(left, after.len());
        }
    }
}
