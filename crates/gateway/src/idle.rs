//! Idleness and draining of client connections: which moved a byte lately, which to close,
//! which to tell to finish what they have and stop.
//!
//! One [`Watchdog`] per accept loop looks at all of its connections with one timer. A
//! connection's own timer (and the shutdown signal beside it) would be polled every time
//! the connection's task wakes, twice for every proxied request; a connection only reads an
//! atomic its watchdog sets.
//!
//! It also keeps every connection's header-read deadline: from a connection's start, or
//! the end of its last answer, to the next request. hyper keeps that one for HTTP/1 with
//! a timer of its own, allocated, armed and dropped for every request (here a request
//! costs two atomic increments, see [`Watched::begin`]), and for HTTP/2 not at all: a
//! connection that opens no stream, only pings (or trickles its preface, or a header block
//! in one-byte CONTINUATION frames), would hold its place under the connection limit for
//! as long as it sends a byte within the idle timeout.

use futures_util::task::AtomicWaker;
use parking_lot::Mutex;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;

/// How often idleness is looked at: a connection closes between `idle` and
/// `idle + 2 * check` after its last byte (and the header-read deadline is kept as
/// loosely).
fn idle_check(idle: Duration) -> Duration {
    (idle / 8).max(Duration::from_millis(50))
}

/// `work` to its end, or `None` once `activity` shows nothing moved for `idle`.
pub(crate) async fn until_idle<T>(
    work: impl Future<Output = T>,
    activity: &Activity,
    idle: Duration,
) -> Option<T> {
    tokio::pin!(work);
    let check = idle_check(idle);
    let mut quiet_since = Instant::now();
    loop {
        tokio::select! {
            out = &mut work => return Some(out),
            _ = tokio::time::sleep(check) => {
                if activity.take() {
                    quiet_since = Instant::now();
                } else if quiet_since.elapsed() >= idle {
                    return None;
                }
            }
        }
    }
}

/// Whether the connection moved a byte since the idle check last looked. A flag, not a
/// time: every read and write sets it, and setting a flag costs less than reading the
/// clock.
pub(crate) struct Activity(AtomicBool);

impl Activity {
    pub(crate) fn new() -> Self {
        Activity(AtomicBool::new(false))
    }
    fn touch(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
    fn take(&self) -> bool {
        self.0.swap(false, Ordering::Relaxed)
    }
}

/// An IO that records activity, for the idle timeout.
pub(crate) struct IdleIo<T> {
    inner: T,
    activity: Arc<Activity>,
}

impl<T> IdleIo<T> {
    pub(crate) fn new(inner: T, activity: Arc<Activity>) -> Self {
        IdleIo { inner, activity }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for IdleIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        result
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for IdleIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        result
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        result
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// A request in flight on a connection hyper serves, from its head until its answer has
/// gone out: begun when made, ended when dropped. It goes from the request's future into
/// its answer's body ([`Ending`]), so a request that ends without an answer (an HTTP/2
/// stream the client reset, a connection gone) is ended too.
pub(crate) struct InFlight(Arc<Watched>);

impl InFlight {
    pub(crate) fn begin(watched: Arc<Watched>) -> Self {
        watched.begin();
        InFlight(watched)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.end();
    }
}

/// An answer's body that tells its connection's watchdog when it has gone out: hyper drops
/// a body once written to its end (or at once, when it has none), and so does a connection
/// that ends before.
pub(crate) struct Ending<B> {
    body: B,
    _in_flight: InFlight,
}

impl<B> Ending<B> {
    pub(crate) fn new(body: B, in_flight: InFlight) -> Self {
        Ending {
            body,
            _in_flight: in_flight,
        }
    }
}

impl<B: http_body::Body + Unpin> http_body::Body for Ending<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// What a connection's watchdog asks of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Order {
    Serve,
    /// Finish the request in flight, if any, then close (shutting down).
    Drain,
    /// Close now: nothing moved for the idle timeout.
    Close,
}

impl Order {
    fn from_u8(v: u8) -> Order {
        match v {
            0 => Order::Serve,
            1 => Order::Drain,
            _ => Order::Close,
        }
    }
}

/// What a connection that kept no request in flight for the header-read timeout is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LateHead {
    /// Close now: an HTTP/1 connection, whose half-sent head a drain would wait for.
    Close,
    /// Drain (HTTP/2's GOAWAY, so that a request crossing it is not lost), then close if it
    /// is still open after another header-read timeout: a connection hyper-util reads the
    /// preface of, HTTP/2 or not yet known.
    Drain,
}

/// One connection as its watchdog sees it.
pub(crate) struct Watched {
    pub(crate) activity: Arc<Activity>,
    order: AtomicU8,
    waker: AtomicWaker,
    late_head: LateHead,
    /// Requests begun and answers ended: unequal while requests are in flight (HTTP/2
    /// has many at once), equal while the connection awaits its next request. Counts, not
    /// a flag, so that a request that came and went between two looks is seen.
    begun: AtomicU32,
    ended: AtomicU32,
}

impl Watched {
    /// A request's head has come in full: the header-read deadline stops until its answer
    /// ends ([`Watched::end`]).
    pub(crate) fn begin(&self) {
        self.begun.fetch_add(1, Ordering::Relaxed);
    }

    /// The answer to a request in flight has gone out (or will not): with none left in
    /// flight, the wait for the next head begins.
    pub(crate) fn end(&self) {
        self.ended.fetch_add(1, Ordering::Relaxed);
    }

    /// The watchdog's order, with `cx`'s task to wake when it changes. Called on every
    /// poll of the connection: a waker compared and an atomic read.
    pub(crate) fn order(&self, cx: &Context<'_>) -> Order {
        // Registered first, so that an order given between the two is not missed.
        self.waker.register(cx.waker());
        self.current()
    }

    /// As [`order`](Watched::order), for the one task that serves this connection, keeping
    /// `registered` between polls: a waker that wakes the task last registered is not
    /// registered again (two atomic operations each time; the HTTP/1.1 loop polls its
    /// connection four times a request, always with the same waker). The registration
    /// stands while the order is `Serve`: only a new order takes it (and wakes it), and an
    /// order given is never taken back.
    pub(crate) fn order_for(&self, registered: &mut Option<Waker>, cx: &Context<'_>) -> Order {
        let order = self.current();
        if order == Order::Serve && registered.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            return order;
        }
        self.waker.register(cx.waker());
        *registered = Some(cx.waker().clone());
        self.current()
    }

    /// The watchdog's order as it stands, without waiting on it.
    pub(crate) fn current(&self) -> Order {
        Order::from_u8(self.order.load(Ordering::Acquire))
    }

    fn give(&self, order: Order) {
        self.order.fetch_max(order as u8, Ordering::AcqRel);
        self.waker.wake();
    }
}

/// The connections of one accept loop, and whether it is stopping.
pub(crate) struct Watchdog {
    idle: Duration,
    header_read: Duration,
    state: Mutex<Kennel>,
}

struct Kennel {
    stopping: bool,
    /// Closed ones are forgotten at the next look, or sooner when many come and go between
    /// looks.
    watched: Vec<Entry>,
    /// The length at which closed ones are forgotten on the next `watch`.
    forget_at: usize,
}

/// A connection and what its watchdog last saw of it.
struct Entry {
    watched: Weak<Watched>,
    /// When it last moved a byte.
    quiet_since: Instant,
    /// Its requests begun and ended at the last look.
    seen: (u32, u32),
    /// Since when it has awaited a request head, as far as the looks can tell: the first
    /// look to see it between requests. `None` while a request is in flight.
    awaiting_head_since: Option<Instant>,
}

/// The least `Kennel::forget_at`.
const FORGET_AT_LEAST: usize = 64;

impl Watchdog {
    /// A watchdog closing connections idle for `idle`, and those it keeps the header-read
    /// deadline of once they waited `header_read` for a request head, and draining them all
    /// once `stop` turns true. It watches for as long as the returned task runs.
    pub(crate) fn start(
        idle: Duration,
        header_read: Duration,
        mut stop: watch::Receiver<bool>,
    ) -> (Arc<Watchdog>, tokio_util::task::AbortOnDropHandle<()>) {
        let watchdog = Arc::new(Watchdog {
            idle,
            header_read,
            state: Mutex::new(Kennel {
                stopping: false,
                watched: Vec::new(),
                forget_at: FORGET_AT_LEAST,
            }),
        });
        let looking = watchdog.clone();
        let task = tokio::spawn(async move {
            let check = idle_check(idle.min(header_read));
            let mut stopped = false;
            loop {
                tokio::select! {
                    _ = stop.wait_for(|stopping| *stopping), if !stopped => {
                        stopped = true;
                        looking.drain_all();
                    }
                    _ = tokio::time::sleep(check) => looking.look(Instant::now()),
                }
            }
        });
        (watchdog, tokio_util::task::AbortOnDropHandle::new(task))
    }

    /// A new connection to watch; already draining if the loop is stopping. It awaits its
    /// first request from now, and each [`Watched::begin`] and [`Watched::end`] says where
    /// it is since; `late_head` is what it is told when the wait passes the header-read
    /// timeout.
    pub(crate) fn watch(&self, late_head: LateHead) -> Arc<Watched> {
        let mut kennel = self.state.lock();
        let watched = Arc::new(Watched {
            activity: Arc::new(Activity::new()),
            order: AtomicU8::new(if kennel.stopping {
                Order::Drain as u8
            } else {
                Order::Serve as u8
            }),
            waker: AtomicWaker::new(),
            late_head,
            begun: AtomicU32::new(0),
            ended: AtomicU32::new(0),
        });
        let now = Instant::now();
        kennel.watched.push(Entry {
            watched: Arc::downgrade(&watched),
            quiet_since: now,
            seen: (0, 0),
            awaiting_head_since: Some(now),
        });
        // A closed connection's entry holds its allocation until forgotten: with many short
        // connections between two looks (one every idle/8), the list would grow without
        // bound. Forgotten here once it doubles, it stays within twice the open ones.
        if kennel.watched.len() >= kennel.forget_at {
            kennel.watched.retain(|e| e.watched.strong_count() > 0);
            kennel.forget_at = (kennel.watched.len() * 2).max(FORGET_AT_LEAST);
        }
        watched
    }

    fn drain_all(&self) {
        let mut kennel = self.state.lock();
        kennel.stopping = true;
        kennel
            .watched
            .retain(|entry| match entry.watched.upgrade() {
                Some(watched) => {
                    watched.give(Order::Drain);
                    true
                }
                None => false,
            });
    }

    /// Closes the connections idle for the idle timeout at `now`, and those that awaited
    /// a request for the header-read timeout (drains them first, when they are to be
    /// drained); forgets closed ones.
    fn look(&self, now: Instant) {
        let (idle, header_read) = (self.idle, self.header_read);
        self.state.lock().watched.retain_mut(|entry| {
            let Some(watched) = entry.watched.upgrade() else {
                return false;
            };
            let seen = (
                watched.begun.load(Ordering::Relaxed),
                watched.ended.load(Ordering::Relaxed),
            );
            let in_flight = seen.0 != seen.1;
            let late_head = if seen != entry.seen || in_flight {
                // It moved on since the last look: the wait, if one began, is counted from
                // this look on (never more than one look's interval short).
                entry.seen = seen;
                entry.awaiting_head_since = (!in_flight).then_some(now);
                false
            } else {
                let since = *entry.awaiting_head_since.get_or_insert(now);
                now.saturating_duration_since(since) >= header_read
            };
            if watched.activity.take() {
                entry.quiet_since = now;
            }
            let idle_too_long = now.saturating_duration_since(entry.quiet_since) >= idle;
            if late_head
                && !idle_too_long
                && watched.late_head == LateHead::Drain
                && watched.current() == Order::Serve
            {
                watched.give(Order::Drain);
                // Closed if it is still here one more header-read timeout on.
                entry.awaiting_head_since = Some(now);
                return true;
            }
            if late_head || idle_too_long {
                watched.give(Order::Close);
                return false;
            }
            true
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    /// A watchdog with these timeouts, and the sender that stops it.
    fn watchdog(
        idle: Duration,
        header_read: Duration,
    ) -> (
        Arc<Watchdog>,
        tokio_util::task::AbortOnDropHandle<()>,
        watch::Sender<bool>,
    ) {
        let (stop_tx, stop) = watch::channel(false);
        let (dog, task) = Watchdog::start(idle, header_read, stop);
        (dog, task, stop_tx)
    }

    fn order_of(watched: &Watched) -> Order {
        watched.order(&Context::from_waker(Waker::noop()))
    }

    /// A waker counting its wakes.
    struct Counted(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Counted {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn a_waker_kept_between_polls_is_woken_by_every_order() {
        let (dog, _task, _stop_tx) = watchdog(HOUR, 24 * HOUR);
        let watched = dog.watch(LateHead::Close);
        let counted = Arc::new(Counted(Default::default()));
        let waker = Waker::from(counted.clone());
        let cx = Context::from_waker(&waker);
        let mut registered = None;
        // Registered once, then recognised: no new registration.
        assert_eq!(watched.order_for(&mut registered, &cx), Order::Serve);
        assert_eq!(watched.order_for(&mut registered, &cx), Order::Serve);
        dog.drain_all();
        assert_eq!(
            counted.0.load(Ordering::SeqCst),
            1,
            "the drain woke the task"
        );
        // The wake took the registration; a poll in the new order registers again, so the
        // next order wakes the task too.
        assert_eq!(watched.order_for(&mut registered, &cx), Order::Drain);
        watched.give(Order::Close);
        assert_eq!(
            counted.0.load(Ordering::SeqCst),
            2,
            "the close woke the task"
        );
        // Another task's waker is registered in place of the one kept.
        let other = Arc::new(Counted(Default::default()));
        let other_waker = Waker::from(other.clone());
        let (dog, _task, _stop_tx) = watchdog(HOUR, 24 * HOUR);
        let watched = dog.watch(LateHead::Close);
        let mut registered = None;
        assert_eq!(watched.order_for(&mut registered, &cx), Order::Serve);
        assert_eq!(
            watched.order_for(&mut registered, &Context::from_waker(&other_waker)),
            Order::Serve
        );
        dog.drain_all();
        assert_eq!(
            other.0.load(Ordering::SeqCst),
            1,
            "the waker registered last is woken"
        );
        assert_eq!(counted.0.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_quiet_connection_is_closed_and_a_busy_one_kept() {
        // No request either has a day to come.
        let (dog, _task, _stop_tx) = watchdog(HOUR, 24 * HOUR);
        let quiet = dog.watch(LateHead::Close);
        let busy = dog.watch(LateHead::Close);
        let start = Instant::now();
        dog.look(start + Duration::from_secs(1800));
        assert_eq!(order_of(&quiet), Order::Serve);
        busy.activity.touch();
        dog.look(start + Duration::from_secs(3601));
        assert_eq!(order_of(&quiet), Order::Close);
        assert_eq!(
            order_of(&busy),
            Order::Serve,
            "it moved since the last look"
        );
        dog.look(start + Duration::from_secs(3601 + 3599));
        assert_eq!(order_of(&busy), Order::Serve);
        dog.look(start + Duration::from_secs(3601 + 3600));
        assert_eq!(order_of(&busy), Order::Close);
        assert!(
            dog.state.lock().watched.is_empty(),
            "closed ones are forgotten"
        );
    }

    #[tokio::test]
    async fn stopping_drains_every_connection_and_every_later_one() {
        let (dog, _task, stop_tx) = watchdog(HOUR, HOUR);
        let open = dog.watch(LateHead::Close);
        let gone = dog.watch(LateHead::Close);
        drop(gone);
        stop_tx.send(true).unwrap();
        for _ in 0..100 {
            if order_of(&open) == Order::Drain {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(order_of(&open), Order::Drain);
        assert_eq!(
            dog.state.lock().watched.len(),
            1,
            "the dropped one is forgotten"
        );
        assert_eq!(order_of(&dog.watch(LateHead::Close)), Order::Drain);
        // An idle close still comes after a drain began.
        dog.look(Instant::now() + Duration::from_secs(3601));
        assert_eq!(order_of(&open), Order::Close);
    }

    #[tokio::test]
    async fn closed_connections_are_forgotten_between_looks() {
        let (dog, _task, _stop_tx) = watchdog(HOUR, HOUR);
        let open: Vec<_> = (0..100).map(|_| dog.watch(LateHead::Close)).collect();
        for _ in 0..10_000 {
            drop(dog.watch(LateHead::Close));
        }
        let kept = dog.state.lock().watched.len();
        assert!(
            kept <= 2 * open.len() + 1,
            "{kept} entries for {} open",
            open.len()
        );
        dog.look(Instant::now());
        assert_eq!(dog.state.lock().watched.len(), open.len());
    }

    #[tokio::test]
    async fn an_order_wakes_the_connection() {
        let (dog, _task, _stop_tx) = watchdog(Duration::from_millis(50), HOUR);
        let watched = dog.watch(LateHead::Close);
        let closed = std::future::poll_fn(|cx| match watched.order(cx) {
            Order::Close => Poll::Ready(()),
            _ => Poll::Pending,
        });
        tokio::time::timeout(Duration::from_secs(5), closed)
            .await
            .expect("the watchdog's close woke the waiting task");
    }

    #[tokio::test]
    async fn a_connection_awaiting_a_head_too_long_is_closed_whatever_it_sends() {
        let (dog, _task, _stop_tx) = watchdog(HOUR, Duration::from_secs(60));
        let start = Instant::now();
        let at = |seconds: u64| start + Duration::from_secs(seconds);
        // A head trickling in a byte at a time is still not a head.
        let trickling = dog.watch(LateHead::Close);
        // Its requests answered, it waits for the next; one is in flight for long.
        let served = dog.watch(LateHead::Close);
        let in_flight = dog.watch(LateHead::Close);
        // HTTP/2 (or not yet known): drained first, then closed.
        let pinging = dog.watch(LateHead::Drain);
        // Two HTTP/2 streams at once, one answered.
        let streams = dog.watch(LateHead::Drain);
        streams.begin();
        streams.begin();
        streams.end();
        served.begin();
        served.end();
        in_flight.begin();
        for seconds in [10, 30, 50] {
            trickling.activity.touch();
            dog.look(at(seconds));
        }
        assert_eq!(order_of(&trickling), Order::Serve);
        dog.look(at(61));
        assert_eq!(order_of(&trickling), Order::Close, "no head in a minute");
        assert_eq!(
            order_of(&pinging),
            Order::Drain,
            "no request in a minute, whatever it sent"
        );
        assert_eq!(
            order_of(&streams),
            Order::Serve,
            "one of its requests is still in flight"
        );
        pinging.activity.touch();
        assert_eq!(
            order_of(&served),
            Order::Serve,
            "its wait began after its answer"
        );
        served.begin();
        served.end();
        dog.look(at(100));
        assert_eq!(order_of(&pinging), Order::Drain);
        dog.look(at(159));
        assert_eq!(
            order_of(&served),
            Order::Serve,
            "a request and answer came between"
        );
        dog.look(at(160));
        assert_eq!(order_of(&served), Order::Close);
        assert_eq!(
            order_of(&in_flight),
            Order::Serve,
            "no head is awaited in flight"
        );
        in_flight.end();
        dog.look(at(200));
        dog.look(at(259));
        assert_eq!(order_of(&in_flight), Order::Serve);
        dog.look(at(260));
        assert_eq!(order_of(&in_flight), Order::Close);
        assert_eq!(
            order_of(&pinging),
            Order::Close,
            "still open a minute after the drain"
        );
        streams.end();
        dog.look(at(301));
        dog.look(at(360));
        assert_eq!(order_of(&streams), Order::Serve);
        dog.look(at(361));
        assert_eq!(order_of(&streams), Order::Drain);
    }

    #[tokio::test]
    async fn a_request_dropped_unanswered_ends_its_wait() {
        let (dog, _task, _stop_tx) = watchdog(HOUR, Duration::from_secs(60));
        let start = Instant::now();
        let watched = dog.watch(LateHead::Drain);
        let reset = InFlight::begin(watched.clone());
        dog.look(start + Duration::from_secs(30));
        dog.look(start + Duration::from_secs(120));
        assert_eq!(order_of(&watched), Order::Serve, "in flight");
        drop(reset);
        dog.look(start + Duration::from_secs(121));
        dog.look(start + Duration::from_secs(181));
        assert_eq!(order_of(&watched), Order::Drain);
    }
}
