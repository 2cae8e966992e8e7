//! A fill: the upstream body pumped by a detached task into a shared append-only buffer that
//! any number of readers stream from. It outlives any one client, stores the complete body
//! when it may, and never holds more than the limits allow.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::response::Parts;
use http::{HeaderMap, Response, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use crate::body::ProxyBody;
use crate::error::{BoxError, ProxyError};
use crate::http_util::conn::ConnState;

/// How far the pump may run ahead of the fastest reader once nothing is kept for storing.
const WINDOW: u64 = 1 << 20;

/// A reader past `max_reader_lag` that has taken nothing for this long has stopped reading.
const STALL: Duration = Duration::from_millis(250);

/// The head every reader gets a copy of.
#[derive(Clone, Debug)]
pub struct Head {
    /// Status.
    pub status: StatusCode,
    /// Version.
    pub version: Version,
    /// Header fields.
    pub headers: HeaderMap,
}

impl Head {
    fn from_parts(p: &Parts) -> Self {
        Self {
            status: p.status,
            version: p.version,
            headers: p.headers.clone(),
        }
    }
}

/// Called with the complete body when the fill ends cleanly and is still storable.
pub type OnComplete = Box<dyn FnOnce(&Head, Bytes) + Send>;

/// Limits of one fill.
#[derive(Clone, Debug)]
pub struct FillLimits {
    /// Bodies larger than this are streamed but not kept.
    pub max_object_size: u64,
    /// Bytes held by all fills together at most.
    pub max_inflight_bytes: u64,
    /// The shared counter for `max_inflight_bytes`.
    pub inflight: Arc<AtomicU64>,
    /// A reader this far behind the fastest one is disconnected (once nothing is kept).
    pub max_reader_lag: u64,
    /// Counts readers disconnected for lagging.
    pub slow_readers: Arc<AtomicU64>,
    /// Counts fills given up because their last reader left and nothing was being kept.
    pub abandoned: Arc<AtomicU64>,
    /// Counts fills given up because their last reader's connection had no stream to spare.
    pub over_stream_limit: Arc<AtomicU64>,
    /// Memory pressure: while the governor sheds, a fill nobody reads stops.
    pub pressure: Arc<super::governor::Pressure>,
}

#[derive(Debug, Default)]
struct State {
    chunks: VecDeque<Bytes>,
    /// Index of `chunks[0]` in the whole body's chunk sequence.
    first: usize,
    /// Bytes pushed so far.
    total: u64,
    /// Bytes currently held in `chunks`.
    held: u64,
    /// Byte offset of each chunk start, parallel to `chunks`.
    offsets: VecDeque<u64>,
    /// Reader positions (chunk index), by reader slot.
    readers: Vec<Option<usize>>,
    /// Slots whose reader was disconnected for lagging (not reusable until it is dropped).
    cut: Vec<bool>,
    /// Each slot's client connection, closed when its reader is cut: a client that stopped
    /// reading does not poll its body, so an error in the body would never reach it.
    conns: Vec<Option<Arc<ConnState>>>,
    /// When each slot's reader last took a chunk.
    last_read: Vec<Instant>,
    /// The connection whose stream limit this fill counts against since its last reader left.
    detached_on: Option<Arc<ConnState>>,
    /// The last reader's connection had no room for a fetch without readers: cancel.
    over_limit: bool,
    live_readers: usize,
    attached_once: bool,
    wakers: Vec<Waker>,
    keep: bool,
    /// Published in a coalescing flight: new followers may still attach from the start.
    pinned: bool,
    done: Option<Result<(), ProxyError>>,
}

impl State {
    fn min_pos(&self) -> usize {
        self.readers
            .iter()
            .flatten()
            .copied()
            .min()
            .unwrap_or(self.first + self.chunks.len())
    }

    /// Drops chunks every reader has; never while the body is kept for storing, while the
    /// fill is pinned in a flight, or while followers were promised a reader (`holds`).
    fn release(&mut self, inflight: &AtomicU64, holds: &AtomicUsize) {
        if self.keep || self.pinned || holds.load(Ordering::Relaxed) > 0 {
            return;
        }
        let min = self.min_pos();
        while self.first < min {
            let Some(c) = self.chunks.pop_front() else {
                break;
            };
            self.offsets.pop_front();
            self.first += 1;
            self.held -= c.len() as u64;
            inflight.fetch_sub(c.len() as u64, Ordering::Relaxed);
        }
    }

    /// Byte offset of chunk index `pos` (the end of what was pushed past the held chunks).
    fn offset(&self, pos: usize) -> u64 {
        self.offsets
            .get(pos.saturating_sub(self.first))
            .copied()
            .unwrap_or(self.total)
    }

    /// How far the fastest reader is behind what was pushed (0 without readers).
    fn ahead(&self) -> u64 {
        match self.readers.iter().flatten().copied().max() {
            Some(max) => self.total - self.offset(max),
            None => 0,
        }
    }

    /// Disconnects readers more than `max_lag` bytes behind the fastest that are not reading
    /// (none for [`STALL`]), and any reader twice that far behind; returns how many. A reader
    /// that keeps reading is not cut for a moment's lag: a client that stopped reading can
    /// look fastest while its socket buffers fill.
    fn cut_laggards(&mut self, max_lag: u64, now: Instant) -> u64 {
        let Some(max) = self.readers.iter().flatten().copied().max() else {
            return 0;
        };
        let front = self.offset(max);
        let mut n = 0;
        for i in 0..self.readers.len() {
            if let Some(p) = self.readers[i]
                && let gap = front - self.offset(p)
                && (gap > max_lag.saturating_mul(2)
                    || (gap > max_lag && now.duration_since(self.last_read[i]) >= STALL))
            {
                self.readers[i] = None;
                self.cut[i] = true;
                if let Some(c) = self.conns[i].take() {
                    c.close.notify_one();
                }
                self.live_readers = self.live_readers.saturating_sub(1);
                n += 1;
            }
        }
        n
    }
}

/// A running fill.
pub struct Fill {
    /// The response head.
    pub head: Head,
    state: Mutex<State>,
    pump_wake: Notify,
    finished: watch::Sender<bool>,
    /// True once new readers can no longer attach from the start (or the body ended).
    closed: watch::Sender<bool>,
    limits: FillLimits,
    /// Clients promised a reader (coalesced followers about to attach): the fill is not
    /// abandoned while any remain.
    holds: Arc<AtomicUsize>,
}

impl std::fmt::Debug for Fill {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fill")
            .field("status", &self.head.status)
            .finish_non_exhaustive()
    }
}

impl Fill {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts pumping `res`'s body. `on_complete` is kept only when `storable`.
    /// `readers` readers (on `conn`) are attached before the first byte arrives.
    #[allow(clippy::too_many_arguments)]
    pub fn spawn(
        res: Response<ProxyBody>,
        limits: FillLimits,
        storable: bool,
        on_complete: Option<OnComplete>,
        holds: Arc<AtomicUsize>,
        readers: usize,
        pinned: bool,
        conn: Option<Arc<ConnState>>,
    ) -> (Arc<Fill>, Vec<Response<ProxyBody>>) {
        let (parts, body) = res.into_parts();
        let head = Head::from_parts(&parts);
        let declared = parts
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let keep = storable && declared.is_none_or(|n| n <= limits.max_object_size);
        let fill = Arc::new(Fill {
            head,
            state: Mutex::new(State {
                keep,
                pinned,
                ..State::default()
            }),
            pump_wake: Notify::new(),
            finished: watch::Sender::new(false),
            closed: watch::Sender::new(false),
            limits,
            holds,
        });
        let early = (0..readers)
            .filter_map(|_| fill.response(conn.clone()))
            .collect();
        let f = fill.clone();
        tokio::spawn(async move {
            let complete = f.pump(body, declared).await;
            let on_complete = if keep { on_complete } else { None };
            if complete && let Some(cb) = on_complete {
                let body = {
                    let st = f.lock();
                    if st.keep {
                        let mut buf = BytesMut::with_capacity(st.held as usize);
                        st.chunks.iter().for_each(|c| buf.extend_from_slice(c));
                        Some(buf.freeze())
                    } else {
                        None
                    }
                };
                if let Some(body) = body {
                    cb(&f.head, body);
                }
            }
            // Keep the buffer while readers still stream, but stop counting it as in flight
            // once nothing more arrives and it is about to be released.
            f.finished.send_replace(true);
            f.closed.send_replace(true);
            let mut st = f.lock();
            st.keep = false;
            st.release(&f.limits.inflight, &f.holds);
        });
        (fill, early)
    }

    async fn pump(&self, mut body: ProxyBody, declared: Option<u64>) -> bool {
        loop {
            // Backpressure: a slow reader throttles the upstream once we keep nothing.
            loop {
                let wait = {
                    let st = self.lock();
                    if st.attached_once
                        && st.live_readers == 0
                        && (!st.keep || st.over_limit || self.limits.pressure.shedding())
                        && self.holds.load(Ordering::Relaxed) == 0
                    {
                        let counter = if !st.keep {
                            &self.limits.abandoned
                        } else if st.over_limit {
                            &self.limits.over_stream_limit
                        } else {
                            &self.limits.pressure.dropped_fills
                        };
                        drop(st);
                        // Nobody reads it and it will not be stored: dropping the body
                        // closes the upstream exchange.
                        counter.fetch_add(1, Ordering::Relaxed);
                        self.finish(Err(ProxyError::UpstreamReset(
                            "abandoned by every client".into(),
                        )));
                        return false;
                    }
                    !st.keep && st.ahead() > WINDOW
                };
                if !wait {
                    break;
                }
                let notified = self.pump_wake.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                let still = {
                    let st = self.lock();
                    !st.keep && st.ahead() > WINDOW && st.live_readers > 0
                };
                if still {
                    notified.await;
                }
            }
            match body.frame().await {
                Some(Ok(frame)) => {
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    if data.is_empty() {
                        continue;
                    }
                    self.push(data);
                }
                Some(Err(e)) => {
                    let err = crate::error::find_proxy_error(&*e)
                        .cloned()
                        .unwrap_or_else(|| ProxyError::UpstreamReset(e.to_string()));
                    self.finish(Err(err));
                    return false;
                }
                None => {
                    let total = self.lock().total;
                    if declared.is_some_and(|d| d != total) {
                        self.finish(Err(ProxyError::UpstreamReset(
                            "body length mismatch".into(),
                        )));
                        return false;
                    }
                    self.finish(Ok(()));
                    return true;
                }
            }
        }
    }

    fn push(&self, data: Bytes) {
        let len = data.len() as u64;
        let wakers = {
            let mut st = self.lock();
            let inflight = self.limits.inflight.fetch_add(len, Ordering::Relaxed) + len;
            let total = st.total;
            st.offsets.push_back(total);
            st.total += len;
            st.held += len;
            st.chunks.push_back(data);
            if st.keep
                && (st.total > self.limits.max_object_size
                    || inflight > self.limits.max_inflight_bytes)
            {
                st.keep = false;
            }
            // Not stored: late readers may join from the start only while the front is
            // within half a reader lag (the other half is their slack for catching up);
            // past it the buffer follows the readers.
            let close = st.pinned && !st.keep && st.total > self.limits.max_reader_lag / 2;
            if close {
                st.pinned = false;
            }
            if !st.keep {
                let cut = st.cut_laggards(self.limits.max_reader_lag, Instant::now());
                self.limits.slow_readers.fetch_add(cut, Ordering::Relaxed);
            }
            st.release(&self.limits.inflight, &self.holds);
            (std::mem::take(&mut st.wakers), close)
        };
        let (wakers, close) = wakers;
        wakers.into_iter().for_each(Waker::wake);
        if close {
            self.closed.send_replace(true);
        }
    }

    fn finish(&self, r: Result<(), ProxyError>) {
        let wakers = {
            let mut st = self.lock();
            if r.is_err() {
                st.keep = false;
            }
            if let Some(conn) = st.detached_on.take() {
                conn.detached.fetch_sub(1, Ordering::AcqRel);
            }
            st.done = Some(r);
            std::mem::take(&mut st.wakers)
        };
        wakers.into_iter().for_each(Waker::wake);
    }

    /// A reader from the first byte, if the front of the body is still held; `conn` is its
    /// client's connection.
    pub fn reader(self: &Arc<Self>, conn: Option<Arc<ConnState>>) -> Option<FillBody> {
        let mut st = self.lock();
        if st.first > 0 {
            return None;
        }
        let free = (0..st.readers.len()).find(|&i| st.readers[i].is_none() && !st.cut[i]);
        let slot = match free {
            Some(i) => {
                st.readers[i] = Some(0);
                st.conns[i] = conn;
                st.last_read[i] = Instant::now();
                i
            }
            None => {
                st.readers.push(Some(0));
                st.cut.push(false);
                st.conns.push(conn);
                st.last_read.push(Instant::now());
                st.readers.len() - 1
            }
        };
        st.live_readers += 1;
        st.attached_once = true;
        let len = self
            .head
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        Some(FillBody {
            fill: self.clone(),
            slot,
            pos: 0,
            len,
            ended: false,
        })
    }

    /// A response for a reader on `conn`, or `None` when the front is gone.
    pub fn response(self: &Arc<Self>, conn: Option<Arc<ConnState>>) -> Option<Response<ProxyBody>> {
        let body = self.reader(conn)?;
        let mut res = Response::new(ProxyBody::stream(body));
        *res.status_mut() = self.head.status;
        *res.version_mut() = self.head.version;
        *res.headers_mut() = self.head.headers.clone();
        Some(res)
    }

    /// The flight is gone: chunks every reader has may be released again.
    pub fn unpin(&self) {
        let mut st = self.lock();
        st.pinned = false;
        st.release(&self.limits.inflight, &self.holds);
        drop(st);
        self.pump_wake.notify_one();
    }

    /// Resolves when the body has ended (complete or not).
    pub async fn finished(&self) {
        let mut rx = self.finished.subscribe();
        let _ = rx.wait_for(|d| *d).await;
    }

    /// Resolves when a new reader can no longer be sure to attach from the first byte: the
    /// body ended, or it is not kept and has run past half a reader lag.
    pub async fn closed(&self) {
        let mut rx = self.closed.subscribe();
        let _ = rx.wait_for(|d| *d).await;
    }

    /// Whether the body is still kept for storing (within `max_object_size`).
    pub fn keeping(&self) -> bool {
        self.lock().keep
    }
}

impl Drop for Fill {
    fn drop(&mut self) {
        let st = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        self.limits.inflight.fetch_sub(st.held, Ordering::Relaxed);
    }
}

/// One reader of a fill: a response body.
pub struct FillBody {
    fill: Arc<Fill>,
    slot: usize,
    pos: usize,
    len: Option<u64>,
    /// The body was read to its end (or its error).
    ended: bool,
}

impl Body for FillBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let mut st = this.fill.lock();
        if st.cut[this.slot] {
            return Poll::Ready(Some(Err(Box::new(ProxyError::UpstreamReset(
                "reader fell too far behind".into(),
            )))));
        }
        let idx = this.pos.wrapping_sub(st.first);
        if this.pos >= st.first
            && let Some(c) = st.chunks.get(idx).cloned()
        {
            this.pos += 1;
            st.readers[this.slot] = Some(this.pos);
            st.last_read[this.slot] = Instant::now();
            if st.first == this.pos - 1 {
                st.release(&this.fill.limits.inflight, &this.fill.holds);
            }
            // The pump may be waiting for the fastest reader (or, once nothing is kept, for
            // the laggards to be cut or released).
            let wake = !st.keep;
            drop(st);
            if wake {
                this.fill.pump_wake.notify_one();
            }
            return Poll::Ready(Some(Ok(Frame::data(c))));
        }
        match &st.done {
            Some(Ok(())) => {
                this.ended = true;
                Poll::Ready(None)
            }
            Some(Err(e)) => {
                this.ended = true;
                Poll::Ready(Some(Err(Box::new(e.clone()))))
            }
            None => {
                st.wakers.push(cx.waker().clone());
                Poll::Pending
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self.len {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

impl Drop for FillBody {
    fn drop(&mut self) {
        {
            let mut st = self.fill.lock();
            if st.cut.get(self.slot).copied().unwrap_or(false) {
                // Already counted out when it was cut; the slot is free again.
                st.cut[self.slot] = false;
            } else {
                if let Some(s) = st.readers.get_mut(self.slot) {
                    *s = None;
                }
                let conn = st.conns.get_mut(self.slot).and_then(Option::take);
                st.live_readers = st.live_readers.saturating_sub(1);
                // An HTTP/2 body dropped before its end: the client reset the stream.
                if !self.ended
                    && let Some(c) = conn.as_ref().filter(|c| c.h2.load(Ordering::Relaxed))
                {
                    c.streams_reset.fetch_add(1, Ordering::Relaxed);
                }
                // The last reader left a body that is still being fetched to be stored: it
                // goes on only within its connection's stream limit.
                if st.live_readers == 0
                    && st.keep
                    && st.done.is_none()
                    && st.detached_on.is_none()
                    && self.fill.holds.load(Ordering::Relaxed) == 0
                    && let Some(conn) = conn
                {
                    if conn.detach() {
                        st.detached_on = Some(conn);
                    } else {
                        st.over_limit = true;
                    }
                }
            }
            st.release(&self.fill.limits.inflight, &self.fill.holds);
        }
        self.fill.pump_wake.notify_one();
    }
}
