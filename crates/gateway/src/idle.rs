//! Idleness and draining of client connections: which moved a byte lately, which to close,
//! which to tell to finish what they have and stop.
//!
//! One [`Watchdog`] per accept loop looks at all of its connections with one timer. A
//! connection's own timer (and the shutdown signal beside it) would be polled every time
//! the connection's task wakes, twice for every proxied request; a connection only reads an
//! atomic its watchdog sets.

use futures_util::task::AtomicWaker;
use parking_lot::Mutex;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;

/// How often idleness is looked at: a connection closes between `idle` and
/// `idle + 2 * check` after its last byte.
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

/// One connection as its watchdog sees it.
pub(crate) struct Watched {
    pub(crate) activity: Arc<Activity>,
    order: AtomicU8,
    waker: AtomicWaker,
}

impl Watched {
    /// The watchdog's order, with `cx`'s task to wake when it changes. Called on every
    /// poll of the connection: a waker compared and an atomic read.
    pub(crate) fn order(&self, cx: &Context<'_>) -> Order {
        // Registered first, so that an order given between the two is not missed.
        self.waker.register(cx.waker());
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
    state: Mutex<Kennel>,
}

struct Kennel {
    stopping: bool,
    /// Each connection with the last time its watchdog saw it move. Closed ones are
    /// forgotten at the next look, or sooner when many come and go between looks.
    watched: Vec<(Weak<Watched>, Instant)>,
    /// The length at which closed ones are forgotten on the next `watch`.
    forget_at: usize,
}

/// The least `Kennel::forget_at`.
const FORGET_AT_LEAST: usize = 64;

impl Watchdog {
    /// A watchdog closing connections idle for `idle`, and draining them all once `stop`
    /// turns true. It watches for as long as the returned task runs.
    pub(crate) fn start(
        idle: Duration,
        mut stop: watch::Receiver<bool>,
    ) -> (Arc<Watchdog>, tokio_util::task::AbortOnDropHandle<()>) {
        let watchdog = Arc::new(Watchdog {
            idle,
            state: Mutex::new(Kennel {
                stopping: false,
                watched: Vec::new(),
                forget_at: FORGET_AT_LEAST,
            }),
        });
        let looking = watchdog.clone();
        let task = tokio::spawn(async move {
            let check = idle_check(idle);
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

    /// A new connection to watch; already draining if the loop is stopping.
    pub(crate) fn watch(&self) -> Arc<Watched> {
        let mut kennel = self.state.lock();
        let watched = Arc::new(Watched {
            activity: Arc::new(Activity::new()),
            order: AtomicU8::new(if kennel.stopping {
                Order::Drain as u8
            } else {
                Order::Serve as u8
            }),
            waker: AtomicWaker::new(),
        });
        kennel
            .watched
            .push((Arc::downgrade(&watched), Instant::now()));
        // A closed connection's entry holds its allocation until forgotten: with many short
        // connections between two looks (one every idle/8), the list would grow without
        // bound. Forgotten here once it doubles, it stays within twice the open ones.
        if kennel.watched.len() >= kennel.forget_at {
            kennel.watched.retain(|(w, _)| w.strong_count() > 0);
            kennel.forget_at = (kennel.watched.len() * 2).max(FORGET_AT_LEAST);
        }
        watched
    }

    fn drain_all(&self) {
        let mut kennel = self.state.lock();
        kennel.stopping = true;
        kennel
            .watched
            .retain(|(watched, _)| match watched.upgrade() {
                Some(watched) => {
                    watched.give(Order::Drain);
                    true
                }
                None => false,
            });
    }

    /// Closes the connections idle for the idle timeout at `now`, and forgets closed ones.
    fn look(&self, now: Instant) {
        let idle = self.idle;
        self.state
            .lock()
            .watched
            .retain_mut(|(watched, quiet_since)| match watched.upgrade() {
                None => false,
                Some(watched) if watched.activity.take() => {
                    *quiet_since = now;
                    true
                }
                Some(watched) if now.saturating_duration_since(*quiet_since) >= idle => {
                    watched.give(Order::Close);
                    false
                }
                Some(_) => true,
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Waker;

    fn order_of(watched: &Watched) -> Order {
        watched.order(&Context::from_waker(Waker::noop()))
    }

    #[tokio::test]
    async fn a_quiet_connection_is_closed_and_a_busy_one_kept() {
        let (_stop_tx, stop) = watch::channel(false);
        let (dog, _task) = Watchdog::start(Duration::from_secs(3600), stop);
        let quiet = dog.watch();
        let busy = dog.watch();
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
        let (stop_tx, stop) = watch::channel(false);
        let (dog, _task) = Watchdog::start(Duration::from_secs(3600), stop);
        let open = dog.watch();
        let gone = dog.watch();
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
        assert_eq!(order_of(&dog.watch()), Order::Drain);
        // An idle close still comes after a drain began.
        dog.look(Instant::now() + Duration::from_secs(3601));
        assert_eq!(order_of(&open), Order::Close);
    }

    #[tokio::test]
    async fn closed_connections_are_forgotten_between_looks() {
        let (_stop_tx, stop) = watch::channel(false);
        let (dog, _task) = Watchdog::start(Duration::from_secs(3600), stop);
        let open: Vec<_> = (0..100).map(|_| dog.watch()).collect();
        for _ in 0..10_000 {
            drop(dog.watch());
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
        let (_stop_tx, stop) = watch::channel(false);
        let (dog, _task) = Watchdog::start(Duration::from_millis(50), stop);
        let watched = dog.watch();
        let closed = std::future::poll_fn(|cx| match watched.order(cx) {
            Order::Close => Poll::Ready(()),
            _ => Poll::Pending,
        });
        tokio::time::timeout(Duration::from_secs(5), closed)
            .await
            .expect("the watchdog's close woke the waiting task");
    }
}
