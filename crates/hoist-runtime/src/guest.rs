//! Building blocks every guest host shares (flights, Go js/wasm functions, policies): memory
//! and time limits, capped output streams, and a `poll_oneoff` that never sleeps past the
//! deadline. Limits are decided here once, so every guest kind inherits the same behaviour and
//! the same error markers ([`MemoryLimitHit`], [`TimeoutHit`], [`StdoutCapExceeded`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};
use wasmtime::{Caller, Extern, Linker, ResourceLimiter, Store, UpdateDeadline};

pub use crate::streams::{
    CappedStdout, GuestOutput, GuestSink, StderrMode, StdoutCapExceeded, TeeStderr,
};

#[derive(Debug, Clone, Copy, thiserror::Error)]
/// The trap raised when a guest's linear memory would grow past its cap.
#[error("memory limit exceeded")]
pub struct MemoryLimitHit;

#[derive(Debug, Clone, Copy, thiserror::Error)]
/// The trap raised when a guest runs past its deadline.
#[error("time limit exceeded")]
pub struct TimeoutHit;

/// Caps a store's linear memory (including its initial size) and tables; one instance, one
/// memory. Growing past the cap traps with [`MemoryLimitHit`].
pub struct MemoryLimiter {
    max_bytes: usize,
}

impl MemoryLimiter {
    /// A limiter allowing `max_bytes` of linear memory.
    pub fn new(max_bytes: u64) -> Self {
        MemoryLimiter {
            max_bytes: usize::try_from(max_bytes).unwrap_or(usize::MAX),
        }
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_bytes {
            return Err(wasmtime::Error::new(MemoryLimitHit));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Tables cost a pointer per element; a million elements is far beyond any flight.
        Ok(desired <= 1 << 20)
    }

    fn instances(&self) -> usize {
        1
    }
    fn tables(&self) -> usize {
        4
    }
    fn memories(&self) -> usize {
        1
    }
}

/// The deadline `timeout` from now: `None` for no timeout, and for one too far away for the
/// clock to represent. A user may ask for any duration, and `Instant + Duration` panics past
/// the clock's range; such a deadline would never come anyway.
pub fn deadline_after(timeout: Option<Duration>) -> Option<Instant> {
    timeout.and_then(|t| Instant::now().checked_add(t))
}

/// Arms a wall-clock deadline `timeout` from now on `store`: the guest traps with
/// [`TimeoutHit`] once it passes. Keep the returned ticker alive while the guest runs (dropping
/// it stops the ticking). With `None` the store never times out and no ticker is started.
pub fn arm_deadline<T: 'static>(
    store: &mut Store<T>,
    timeout: Option<Duration>,
) -> Option<EpochTicker> {
    arm_deadline_at(store, deadline_after(timeout))
}

/// [`arm_deadline`] with an absolute deadline.
pub fn arm_deadline_at<T: 'static>(
    store: &mut Store<T>,
    deadline: Option<Instant>,
) -> Option<EpochTicker> {
    CallDeadline::install(store).arm_at(store, deadline);
    deadline.map(|_| EpochTicker::start(store.engine().clone()))
}

/// A store's deadline, read by the epoch callback that [`CallDeadline::install`] sets once, so
/// that a long-lived instance can move it call by call with an atomic store. Installing a new
/// callback per call instead boxes a closure each time, an allocation and a free that were a
/// few percent of a small Rego policy's evaluation. Whoever arms a deadline keeps an
/// [`EpochTicker`] running.
pub struct CallDeadline {
    origin: Instant,
    /// Nanoseconds after `origin`; `u64::MAX` for none.
    at: Arc<AtomicU64>,
}

impl CallDeadline {
    /// Sets `store`'s epoch callback; calls are unlimited until [`CallDeadline::arm_at`].
    pub fn install<T: 'static>(store: &mut Store<T>) -> CallDeadline {
        let origin = Instant::now();
        let at = Arc::new(AtomicU64::new(u64::MAX));
        let seen = Arc::clone(&at);
        store.epoch_deadline_callback(move |_| {
            if origin.elapsed().as_nanos() >= u128::from(seen.load(Ordering::Relaxed)) {
                Err(wasmtime::Error::new(TimeoutHit))
            } else {
                Ok(UpdateDeadline::Continue(1))
            }
        });
        store.set_epoch_deadline(NO_EPOCH_DEADLINE);
        CallDeadline { origin, at }
    }

    /// Makes `deadline` the store's deadline (`None`: no limit) from the next call on.
    pub fn arm_at<T: 'static>(&self, store: &mut Store<T>, deadline: Option<Instant>) {
        match deadline {
            Some(deadline) => {
                let after = deadline.saturating_duration_since(self.origin).as_nanos();
                self.at
                    .store(u64::try_from(after).unwrap_or(u64::MAX), Ordering::Relaxed);
                store.set_epoch_deadline(1);
            }
            None => {
                self.at.store(u64::MAX, Ordering::Relaxed);
                store.set_epoch_deadline(NO_EPOCH_DEADLINE);
            }
        }
    }
}

/// The epoch deadline delta of a store without a time limit. Not `u64::MAX`: wasmtime adds the
/// engine's current epoch to it, which overflows (a panic in debug builds, a deadline in the
/// past in release builds) once any ticker on a shared engine has advanced the epoch. Half the
/// range is thousands of years of 10 ms ticks.
pub const NO_EPOCH_DEADLINE: u64 = u64::MAX / 2;

/// Increments the engine's epoch every 10 ms while a flight runs.
pub struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl EpochTicker {
    /// Starts ticking `engine`'s epoch.
    pub fn start(engine: wasmtime::Engine) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = thread::Builder::new()
            .name("hoist-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Acquire) {
                    thread::park_timeout(Duration::from_millis(10));
                    engine.increment_epoch();
                }
            })
            .ok();
        EpochTicker { stop, thread }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}

/// Defines `wasi_snapshot_preview1.poll_oneoff` in `linker` (shadowing wasmtime-wasi's) with
/// one that sleeps at most until the deadline `deadline(state)` returns, then traps with
/// [`TimeoutHit`].
pub fn add_bounded_poll_oneoff<T: 'static>(
    linker: &mut Linker<T>,
    deadline: fn(&T) -> Option<Instant>,
) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    linker.func_wrap(
        "wasi_snapshot_preview1",
        "poll_oneoff",
        move |caller: Caller<'_, T>, subs: i32, events: i32, nsubs: i32, nevents: i32| {
            let until = deadline(caller.data());
            bounded_poll_oneoff(caller, until, subs, events, nsubs, nevents)
        },
    )?;
    Ok(())
}

// ---- bounded poll_oneoff -------------------------------------------------------------------
//
// wasmtime-wasi's poll_oneoff sleeps on the host for as long as the guest asks, where epoch
// interruption cannot reach it: a flight calling time.Sleep(time.Hour) would hang hoist.
// This replacement sleeps at most until the flight's deadline and then stops it. stdin and
// stdout are in-memory and always ready, so fd subscriptions complete at once.

const ERRNO_SUCCESS: i32 = 0;
const ERRNO_FAULT: i32 = 21;
const ERRNO_INVAL: i32 = 28;
const ERRNO_NOTSUP: i32 = 58;
const SUBSCRIPTION_SIZE: usize = 48;
const EVENT_SIZE: usize = 32;

fn bounded_poll_oneoff<T>(
    mut caller: Caller<'_, T>,
    deadline: Option<Instant>,
    subs_ptr: i32,
    events_ptr: i32,
    nsubs: i32,
    nevents_ptr: i32,
) -> wasmtime::Result<i32> {
    let Some(Extern::Memory(memory)) = caller.get_export("memory") else {
        return Ok(ERRNO_FAULT);
    };
    let data = memory.data_mut(&mut caller);
    poll_oneoff_in(data, deadline, subs_ptr, events_ptr, nsubs, nevents_ptr)
        .map_err(wasmtime::Error::new)
}

/// `poll_oneoff` over a guest's linear memory `data`, engine-independent: sleeps at most
/// until `deadline` (then fails with [`TimeoutHit`]); fd subscriptions complete at once.
pub(crate) fn poll_oneoff_in(
    data: &mut [u8],
    deadline: Option<Instant>,
    subs_ptr: i32,
    events_ptr: i32,
    nsubs: i32,
    nevents_ptr: i32,
) -> Result<i32, TimeoutHit> {
    let nsubs = nsubs as u32 as usize;
    if nsubs == 0 {
        return Ok(ERRNO_INVAL);
    }
    let subs_at = subs_ptr as u32 as usize;
    let Some(subs) = nsubs
        .checked_mul(SUBSCRIPTION_SIZE)
        .and_then(|len| data.get(subs_at..subs_at + len))
        .map(<[u8]>::to_vec)
    else {
        return Ok(ERRNO_FAULT);
    };
    let field = |sub: &[u8], at: usize, len: usize| -> u64 {
        let mut bytes = [0u8; 8];
        if let (Some(dst), Some(src)) = (bytes.get_mut(..len), sub.get(at..at + len)) {
            dst.copy_from_slice(src);
        }
        u64::from_le_bytes(bytes)
    };

    let now_mono = Instant::now();
    let now_wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    // (userdata, type, fd-ready or clock wait)
    let mut waits = Vec::with_capacity(nsubs);
    let mut any_fd = false;
    for sub in subs.chunks_exact(SUBSCRIPTION_SIZE) {
        let userdata = field(sub, 0, 8);
        let tag = field(sub, 8, 1) as u8;
        match tag {
            0 => {
                let clock_id = field(sub, 16, 4);
                let timeout = field(sub, 24, 8);
                let flags = field(sub, 40, 2);
                let absolute = flags & 1 == 1;
                let wait = match (clock_id, absolute) {
                    (_, false) => Duration::from_nanos(timeout),
                    // realtime
                    (0, true) => Duration::from_nanos(timeout).saturating_sub(now_wall),
                    // monotonic: wasmtime-wasi's monotonic clock starts at context creation;
                    // treat an absolute monotonic time as relative to now (Go never does this).
                    (1, true) => Duration::from_nanos(timeout),
                    _ => return Ok(ERRNO_NOTSUP),
                };
                waits.push((userdata, 0u8, Some(wait)));
            }
            1 | 2 => {
                any_fd = true;
                waits.push((userdata, tag, None));
            }
            _ => return Ok(ERRNO_INVAL),
        }
    }

    let shortest = waits.iter().filter_map(|w| w.2).min();
    if !any_fd && let Some(wait) = shortest {
        let wake = now_mono.checked_add(wait);
        match (deadline, wake) {
            (Some(deadline), None) => {
                thread::sleep(deadline.saturating_duration_since(Instant::now()));
                return Err(TimeoutHit);
            }
            (Some(deadline), Some(wake)) if wake > deadline => {
                thread::sleep(deadline.saturating_duration_since(Instant::now()));
                return Err(TimeoutHit);
            }
            (_, Some(wake)) => thread::sleep(wake.saturating_duration_since(Instant::now())),
            // No deadline and a wait beyond the representable: sleep "forever", as asked.
            (None, None) => thread::sleep(Duration::from_secs(u64::from(u32::MAX))),
        }
    }

    let elapsed = now_mono.elapsed();
    let mut events = Vec::new();
    for (userdata, tag, wait) in &waits {
        let ready = match wait {
            None => true,
            Some(wait) => *wait <= elapsed,
        };
        if !ready {
            continue;
        }
        let mut event = [0u8; EVENT_SIZE];
        event[0..8].copy_from_slice(&userdata.to_le_bytes());
        event[10] = *tag;
        events.extend_from_slice(&event);
    }
    let count = (events.len() / EVENT_SIZE) as u32;
    let events_at = events_ptr as u32 as usize;
    let nevents_at = nevents_ptr as u32 as usize;
    let Some(dst) = data.get_mut(events_at..events_at + events.len()) else {
        return Ok(ERRNO_FAULT);
    };
    dst.copy_from_slice(&events);
    let Some(dst) = data.get_mut(nevents_at..nevents_at + 4) else {
        return Ok(ERRNO_FAULT);
    };
    dst.copy_from_slice(&count.to_le_bytes());
    Ok(ERRNO_SUCCESS)
}

/// WASI's `EBADF`, for an `fd_read` of a descriptor the guest does not have.
pub const ERRNO_BADF: i32 = 8;

/// The body of a WASI `fd_read` served by the host: fills the guest's iovec list at `iovs`
/// (`iovs_len` entries of pointer and length) from `fill`, which copies up to a buffer's
/// length and returns how much it copied (0 at end of input), and writes the total at
/// `nread`. Returns the WASI errno: 0, or `EFAULT` for a pointer outside `memory`.
pub fn fd_read_into(
    memory: &mut [u8],
    iovs: i32,
    iovs_len: i32,
    nread: i32,
    mut fill: impl FnMut(&mut [u8]) -> usize,
) -> i32 {
    let word = |data: &[u8], at: usize| -> Option<usize> {
        let bytes: [u8; 4] = data.get(at..at.checked_add(4)?)?.try_into().ok()?;
        Some(u32::from_le_bytes(bytes) as usize)
    };
    let mut total = 0usize;
    for i in 0..(iovs_len as u32 as usize) {
        let at = (iovs as u32 as usize).saturating_add(i.saturating_mul(8));
        let (Some(ptr), Some(len)) = (word(memory, at), word(memory, at.saturating_add(4))) else {
            return ERRNO_FAULT;
        };
        let Some(buffer) = ptr
            .checked_add(len)
            .and_then(|end| memory.get_mut(ptr..end))
        else {
            return ERRNO_FAULT;
        };
        let n = fill(buffer);
        total += n;
        if n < len {
            break;
        }
    }
    let nread = nread as u32 as usize;
    match nread
        .checked_add(4)
        .and_then(|end| memory.get_mut(nread..end))
    {
        Some(to) => to.copy_from_slice(&(total as u32).to_le_bytes()),
        None => return ERRNO_FAULT,
    }
    ERRNO_SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A user may give any timeout: one past the clock's range is no limit, not a panic.
    #[test]
    fn timeouts_past_the_clock_are_no_limit() {
        assert_eq!(deadline_after(Some(Duration::MAX)), None);
        assert_eq!(deadline_after(None), None);
        assert!(deadline_after(Some(Duration::from_secs(1))).is_some());
        let mut config = wasmtime::Config::new();
        config.epoch_interruption(true);
        let engine = wasmtime::Engine::new(&config).unwrap();
        let mut store = Store::new(&engine, ());
        assert!(arm_deadline(&mut store, Some(Duration::MAX)).is_none());
    }

    fn iovec(memory: &mut [u8], at: usize, ptr: u32, len: u32) {
        memory[at..at + 4].copy_from_slice(&ptr.to_le_bytes());
        memory[at + 4..at + 8].copy_from_slice(&len.to_le_bytes());
    }

    #[test]
    fn fd_read_into_fills_iovecs_in_order_and_stops_at_the_end_of_input() {
        let mut memory = vec![0u8; 256];
        iovec(&mut memory, 0, 100, 3);
        iovec(&mut memory, 8, 120, 10);
        let mut input: &[u8] = b"hello";
        let errno = fd_read_into(&mut memory, 0, 2, 200, |buffer| {
            let n = buffer.len().min(input.len());
            buffer[..n].copy_from_slice(&input[..n]);
            input = &input[n..];
            n
        });
        assert_eq!(errno, ERRNO_SUCCESS);
        assert_eq!(&memory[100..103], b"hel");
        assert_eq!(&memory[120..122], b"lo");
        assert_eq!(u32::from_le_bytes(memory[200..204].try_into().unwrap()), 5);
    }

    #[test]
    fn fd_read_into_refuses_pointers_outside_memory() {
        let mut memory = vec![0u8; 64];
        iovec(&mut memory, 0, 60, 10); // buffer runs past the end
        assert_eq!(fd_read_into(&mut memory, 0, 1, 8, |_| 0), ERRNO_FAULT);
        iovec(&mut memory, 0, 16, 4);
        assert_eq!(fd_read_into(&mut memory, 0, 1, 62, |_| 0), ERRNO_FAULT); // nread past the end
        assert_eq!(fd_read_into(&mut memory, 60, 1, 8, |_| 0), ERRNO_FAULT); // iovec past the end
        assert_eq!(fd_read_into(&mut memory, -8, 1, 8, |_| 0), ERRNO_FAULT);
    }
}
