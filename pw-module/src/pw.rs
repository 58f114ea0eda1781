//! Thin owners of PipeWire objects used by both modules: the core
//! connection, a stream with its listener, a main-loop timer, and the
//! buffer and time accessors used on the data thread.
//!
//! Each owner releases its object on drop, so a module's state tears down
//! in field order with nothing left behind.

use crate::ffi::{self, Hook, Properties};
use libspa_sys as spa;
use pipewire_sys as pw;
use std::ffi::c_void;
use std::ptr;

/// The `pw_core` a module creates its streams on: the one the context
/// already has when loaded into a client, else an in-process connection to
/// the daemon it is loaded into (which we then own and disconnect).
pub struct CoreConn {
    core: *mut pw::pw_core,
    owned: bool,
    proxy_hook: Hook,
    core_hook: Hook,
}

impl CoreConn {
    /// Finds or makes the core of `context`.
    ///
    /// # Safety
    /// `context` must be the live context of the module being loaded.
    pub unsafe fn new(context: *mut pw::pw_context) -> Result<CoreConn, String> {
        // SAFETY: `context` is live (the caller's contract); the type name is
        // a NUL-terminated static string.
        let existing =
            unsafe { pw::pw_context_get_object(context, c"PipeWire:Interface:Core".as_ptr()) };
        if !existing.is_null() {
            return Ok(CoreConn {
                core: existing as *mut pw::pw_core,
                owned: false,
                proxy_hook: Hook::new(),
                core_hook: Hook::new(),
            });
        }
        // In the daemon: an in-process connection. Loaded into a client
        // process (no local server), connect_self fails; then connect to the
        // default remote as any client would.
        // SAFETY: a live context; NULL properties are allowed (and would
        // pass ownership to PipeWire).
        let mut core = unsafe { pw::pw_context_connect_self(context, ptr::null_mut(), 0) };
        if core.is_null() {
            // SAFETY: as above.
            core = unsafe { pw::pw_context_connect(context, ptr::null_mut(), 0) };
        }
        if core.is_null() {
            return Err(format!(
                "cannot connect to the PipeWire core: {}",
                std::io::Error::last_os_error()
            ));
        }
        Ok(CoreConn {
            core,
            owned: true,
            proxy_hook: Hook::new(),
            core_hook: Hook::new(),
        })
    }

    /// The core.
    pub fn as_ptr(&self) -> *mut pw::pw_core {
        self.core
    }

    /// Listens for the core proxy going away and for core errors.
    ///
    /// # Safety
    /// `data` must stay valid until this `CoreConn` is dropped (or
    /// forgotten), and the events' callbacks must accept it; the proxy's
    /// `destroy` event must call [`CoreConn::forget`], so that drop never
    /// touches a freed core. Call once.
    pub unsafe fn listen(
        &mut self,
        proxy_events: &'static pw::pw_proxy_events,
        core_events: &'static pw::pw_core_events,
        data: *mut c_void,
    ) {
        if self.core.is_null() {
            return;
        }
        let (proxy_hook, core_hook) = (self.proxy_hook.as_ptr(), self.core_hook.as_ptr());
        // SAFETY: a live core (NULL only after `forget`) is also a
        // pw_proxy, and its interface's methods are pw_core_methods. The
        // hooks are boxed (fixed addresses) and unlinked in `forget` or
        // drop, before they are freed; the event tables are static; `data`
        // outlives the listeners by the caller's contract.
        unsafe {
            pw::pw_proxy_add_listener(
                self.core as *mut pw::pw_proxy,
                proxy_hook,
                proxy_events,
                data,
            );
            ffi::iface_call::<pw::pw_core_methods, _>(self.core as *mut c_void, |m, obj| {
                if let Some(f) = m.add_listener {
                    f(obj, core_hook, core_events, data);
                }
            });
        }
    }

    /// Forgets the core after PipeWire destroyed it (its proxy's destroy
    /// event), so that drop does not touch it.
    pub fn forget(&mut self) {
        // SAFETY: both hooks sit in lists of the core proxy, which is alive:
        // either we are in its destroy event (emitted before the proxy is
        // freed; unlinking the hook being called is allowed), or it has not
        // been destroyed, since that event would have called this. A hook
        // that is not linked is left alone.
        unsafe {
            self.proxy_hook.remove();
            self.core_hook.remove();
        }
        self.core = ptr::null_mut();
    }
}

impl Drop for CoreConn {
    fn drop(&mut self) {
        if self.core.is_null() {
            return;
        }
        // SAFETY: the core is alive (its destroy event would have called
        // `forget`, clearing it); the hooks are unlinked before a core we
        // own is disconnected, so the disconnect emits nothing into our
        // owner's state; one we do not own belongs to the context.
        unsafe {
            self.proxy_hook.remove();
            self.core_hook.remove();
            if self.owned {
                pw::pw_core_disconnect(self.core);
            }
        }
    }
}

/// A `pw_stream` with our listener; destroyed on drop (which waits for the
/// data thread to leave `process`).
pub struct Stream {
    stream: *mut pw::pw_stream,
    hook: Hook,
}

impl Stream {
    /// Creates a stream named `name` with `props` (ownership passes to
    /// PipeWire) and adds `events` with `data`.
    ///
    /// # Safety
    /// `core` must be live; `data` must stay valid until the stream drops,
    /// and the events' callbacks must accept it; the `destroy` event must
    /// call [`Stream::forget`], so that drop never touches a freed stream.
    pub unsafe fn new(
        core: *mut pw::pw_core,
        name: &str,
        props: Properties,
        events: &'static pw::pw_stream_events,
        data: *mut c_void,
    ) -> Result<Stream, String> {
        let n = ffi::cstring(name);
        // SAFETY: a live core (the caller's contract); the name is copied;
        // ownership of the properties passes to PipeWire (documented).
        let s = unsafe { pw::pw_stream_new(core, n.as_ptr(), props.into_raw()) };
        if s.is_null() {
            return Err(format!(
                "cannot create stream: {}",
                std::io::Error::last_os_error()
            ));
        }
        let mut st = Stream {
            stream: s,
            hook: Hook::new(),
        };
        // SAFETY: the stream was just made; the hook is boxed and unlinked
        // before it is freed (drop or `forget`); the event table is static;
        // `data` outlives the stream by the caller's contract.
        unsafe { pw::pw_stream_add_listener(s, st.hook.as_ptr(), events, data) };
        Ok(st)
    }

    /// Forgets the stream after PipeWire destroyed it itself (from its
    /// destroy event: the core it lives on went away), so that drop does
    /// not destroy it a second time.
    pub fn forget(&mut self) {
        // SAFETY: the stream is alive: either we are in its destroy event,
        // emitted before its hook list is freed (unlinking the hook being
        // called is allowed), or it was not destroyed, since that event
        // would have called this. An unlinked hook is left alone.
        unsafe { self.hook.remove() };
        self.stream = ptr::null_mut();
    }

    /// The raw stream, for the data-thread accessors.
    pub fn as_ptr(&self) -> *mut pw::pw_stream {
        self.stream
    }

    /// Sets the stream's own volume and mute (`SPA_PROP_channelVolumes`,
    /// linear gain on each of `channels`, and `SPA_PROP_mute`): what
    /// pavucontrol, `wpctl` and the desktop's applet show and change.
    /// Main thread only (PipeWire applies it in the stream's adapter).
    /// A no-op once the stream is gone.
    pub fn set_volume_mute(&self, channels: u8, gain: f32, mute: bool) {
        if self.stream.is_null() {
            return;
        }
        let mut volumes = [gain; 64];
        let n = u32::from(channels).clamp(1, 64);
        let mut m = [if mute { 1.0f32 } else { 0.0 }];
        // SAFETY: a live stream (owned by self), on the main thread; the
        // value arrays outlive the calls, which copy them; each variadic
        // list ends with id 0 as pw_stream_set_control requires.
        unsafe {
            pw::pw_stream_set_control(
                self.stream,
                spa::SPA_PROP_channelVolumes,
                n,
                volumes.as_mut_ptr(),
                0u32,
            );
            pw::pw_stream_set_control(self.stream, spa::SPA_PROP_mute, 1, m.as_mut_ptr(), 0u32);
        }
    }

    /// Updates the stream's properties with `props` (main thread only;
    /// PipeWire copies them). A no-op once the stream is gone.
    pub fn update_properties(&self, props: &Properties) {
        if self.stream.is_null() {
            return;
        }
        // SAFETY: a live stream, on the main thread; the dictionary lives
        // for the call.
        unsafe { pw::pw_stream_update_properties(self.stream, props.dict()) };
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        if self.stream.is_null() {
            return;
        }
        // SAFETY: a live stream (its destroy event would have cleared it
        // through `forget`), on the main thread that made it. The hook goes
        // first so that teardown emits nothing into the owner's state; then
        // pw_stream_destroy removes the node from the data loop with a
        // blocking invoke, so `process` is not running and never runs again
        // once it returns.
        unsafe {
            self.hook.remove();
            pw::pw_stream_destroy(self.stream);
        }
    }
}

/// Connects `stream` with one `EnumFormat` param. A free function, not a
/// method, because connecting may emit events that borrow the stream's owner.
///
/// # Safety
/// `stream` must be live.
pub unsafe fn connect(
    stream: *mut pw::pw_stream,
    direction: spa::spa_direction,
    flags: pw::pw_stream_flags,
    format_pod: &[u8],
) -> Result<(), String> {
    let mut params = [format_pod.as_ptr() as *const spa::spa_pod];
    // SAFETY: a live stream (the caller's contract); `format_pod` is a
    // serialized pod that PipeWire copies during the call.
    let r = unsafe {
        pw::pw_stream_connect(
            stream,
            direction,
            pw::PW_ID_ANY,
            flags,
            params.as_mut_ptr(),
            1,
        )
    };
    if r < 0 {
        return Err(format!(
            "cannot connect stream: {}",
            std::io::Error::from_raw_os_error(-r)
        ));
    }
    Ok(())
}

/// Name of a stream state, for logs.
pub fn state_name(s: pw::pw_stream_state) -> String {
    // SAFETY: pw_stream_state_as_string takes any value and returns a
    // static NUL-terminated string.
    unsafe {
        ffi::str_from(pw::pw_stream_state_as_string(s))
            .unwrap_or("?")
            .to_owned()
    }
}

/// A source on the main loop: a repeating timer, or a socket.
pub struct MainSource {
    utils: *mut spa::spa_loop_utils,
    source: *mut spa::spa_source,
}

impl MainSource {
    /// Calls `func(data, fd, mask)` on the main thread whenever `fd` is
    /// readable (a node's command socket). `fd` stays the caller's.
    ///
    /// # Safety
    /// As [`MainSource::timer`]; `fd` must outlive the source.
    pub unsafe fn io(
        main_loop: *mut pw::pw_loop,
        fd: std::ffi::c_int,
        func: unsafe extern "C" fn(*mut c_void, std::ffi::c_int, u32),
        data: *mut c_void,
    ) -> Result<MainSource, String> {
        // SAFETY: a live main loop (the caller's contract).
        let utils = unsafe { (*main_loop).utils };
        // SAFETY: the loop's utils interface, on its own thread; `data`
        // and `fd` outlive the source by the caller's contract.
        let source = unsafe {
            ffi::iface_call::<spa::spa_loop_utils_methods, _>(
                utils as *mut c_void,
                |m, obj| match m.add_io {
                    Some(f) => f(obj, fd, spa::SPA_IO_IN, false, Some(func), data),
                    None => ptr::null_mut(),
                },
            )
        };
        if source.is_null() {
            return Err("cannot add a socket to the main loop".into());
        }
        Ok(MainSource { utils, source })
    }

    /// Calls `func(data, expirations)` every `interval_ns` on `main_loop`.
    ///
    /// # Safety
    /// `main_loop` must be the live main loop, this the main thread, and
    /// the timer must drop before the loop does; `data` must stay valid
    /// until the timer drops, and `func` must accept it.
    pub unsafe fn timer(
        main_loop: *mut pw::pw_loop,
        func: unsafe extern "C" fn(*mut c_void, u64),
        data: *mut c_void,
        interval_ns: u64,
    ) -> Result<MainSource, String> {
        // SAFETY: a live main loop (the caller's contract), whose `utils`
        // is a spa_loop_utils interface.
        let utils = unsafe { (*main_loop).utils };
        // SAFETY: the loop's utils interface, on the loop's own thread
        // (sources of a loop are added from its thread); `data` outlives
        // the source by the caller's contract.
        let source = unsafe {
            ffi::iface_call::<spa::spa_loop_utils_methods, _>(
                utils as *mut c_void,
                |m, obj| match m.add_timer {
                    Some(f) => f(obj, Some(func), data),
                    None => ptr::null_mut(),
                },
            )
        };
        if source.is_null() {
            return Err("cannot add a main-loop timer".into());
        }
        let ts = spa::timespec {
            tv_sec: (interval_ns / 1_000_000_000) as _,
            tv_nsec: (interval_ns % 1_000_000_000) as _,
        };
        let (mut value, mut interval) = (ts, ts);
        // SAFETY: the source was just made by these utils; the timespecs
        // live across the call, which copies them.
        unsafe {
            ffi::iface_call::<spa::spa_loop_utils_methods, _>(utils as *mut c_void, |m, obj| {
                if let Some(f) = m.update_timer {
                    f(obj, source, &mut value, &mut interval, false);
                }
            });
        }
        Ok(MainSource { utils, source })
    }
}

impl Drop for MainSource {
    fn drop(&mut self) {
        // SAFETY: the source was made by these utils and is destroyed only
        // here, on the main thread that added it, while the loop lives
        // (`new`'s contract). After this the callback cannot run again.
        unsafe {
            let source = self.source;
            ffi::iface_call::<spa::spa_loop_utils_methods, _>(
                self.utils as *mut c_void,
                |m, obj| {
                    if let Some(f) = m.destroy_source {
                        f(obj, source);
                    }
                },
            );
        }
    }
}

/// The stream's timing right now (data thread; lock-free in PipeWire).
///
/// # Safety
/// `stream` must be live.
pub unsafe fn stream_time(stream: *mut pw::pw_stream) -> pw::pw_time {
    // SAFETY: pw_time is plain integers, for which all-zero is valid.
    let mut t: pw::pw_time = unsafe { std::mem::zeroed() };
    // SAFETY: a live stream (the caller's contract); PipeWire fills at most
    // the size we pass of the struct we own.
    unsafe { pw::pw_stream_get_time_n(stream, &mut t, std::mem::size_of::<pw::pw_time>()) };
    t
}

/// A buffer dequeued from a stream in its `process` callback, queued back
/// on drop. Its samples are reached only through borrows of it, so no
/// slice or chunk pointer outlives the dequeue.
pub struct Buffer {
    stream: *mut pw::pw_stream,
    buf: ptr::NonNull<pw::pw_buffer>,
    /// An output stream's buffer: PipeWire maps those writable, an input
    /// stream's only readable.
    writable: bool,
}

/// Bytes per sample: the streams carry interleaved `f32`.
const SAMPLE_BYTES: usize = std::mem::size_of::<f32>();

impl Buffer {
    /// Dequeues a buffer of `stream`, whose direction is `direction`;
    /// `None` when none is available.
    ///
    /// # Safety
    /// Call from the `process` callback of the live `stream`, on its data
    /// thread, and drop the `Buffer` before that callback returns: the
    /// buffer's memory is ours only until it is queued back, and queuing it
    /// back needs the stream. `direction` must be the stream's: it decides
    /// whether the buffer may be written.
    pub unsafe fn dequeue(
        stream: *mut pw::pw_stream,
        direction: spa::spa_direction,
    ) -> Option<Buffer> {
        // SAFETY: a live stream, from its process callback (the contract).
        let buf = unsafe { pw::pw_stream_dequeue_buffer(stream) };
        ptr::NonNull::new(buf).map(|buf| Buffer {
            stream,
            buf,
            writable: direction == spa::SPA_DIRECTION_OUTPUT,
        })
    }

    /// The first data plane, when it is mapped memory with a chunk.
    fn plane(&self) -> Option<*mut spa::spa_data> {
        // SAFETY: a dequeued pw_buffer and the spa_buffer it points to stay
        // valid and ours until queued back (on drop); each pointer is
        // checked before it is followed.
        unsafe {
            let sb = self.buf.as_ref().buffer;
            if sb.is_null() || (*sb).n_datas < 1 || (*sb).datas.is_null() {
                return None;
            }
            let d = (*sb).datas;
            (!(*d).data.is_null() && !(*d).chunk.is_null()).then_some(d)
        }
    }

    /// The interleaved samples written into the buffer (a capture stream's
    /// input): the chunk's valid region, clamped into the plane. `None`
    /// when there is no mapped plane; empty when it holds no whole sample
    /// or its memory is not `f32`-aligned.
    pub fn samples(&self) -> Option<&[f32]> {
        let d = self.plane()?;
        // SAFETY: `plane` checked `d` and its `data` and `chunk` pointers; a
        // non-NULL `data` maps `maxsize` readable bytes (PipeWire leaves it
        // NULL for memory it did not map). The chunk (shared
        // with the peer) is read once and its region clamped into the
        // plane, the start checked for `f32` alignment, and the length
        // rounded down to whole samples, so the slice stays inside the
        // mapping. It borrows `self`, which keeps the buffer dequeued (the
        // memory is ours) for as long as the slice lives.
        unsafe {
            let max = (*d).maxsize as usize;
            if max == 0 {
                return Some(&[]);
            }
            let c = *(*d).chunk;
            let off = c.offset as usize % max;
            let size = (c.size as usize).min(max - off);
            let p = ((*d).data as *const u8).add(off);
            if p.align_offset(std::mem::align_of::<f32>()) != 0 {
                return Some(&[]);
            }
            Some(std::slice::from_raw_parts(
                p as *const f32,
                size / SAMPLE_BYTES,
            ))
        }
    }

    /// The whole plane as interleaved samples to write (an output
    /// stream's); [`Buffer::commit`] then says how much was written.
    /// `None` when there is no mapped plane or the buffer is an input
    /// stream's; empty when its memory is not `f32`-aligned.
    pub fn samples_mut(&mut self) -> Option<&mut [f32]> {
        if !self.writable {
            return None;
        }
        let d = self.plane()?;
        // SAFETY: as in `samples`, and an output stream's plane is mapped
        // writable: `data` maps `maxsize` bytes that are ours while
        // dequeued; the slice covers whole aligned samples inside them, and
        // borrows `self` mutably, so it is the only view.
        unsafe {
            let p = (*d).data as *mut u8;
            if p.align_offset(std::mem::align_of::<f32>()) != 0 {
                return Some(&mut []);
            }
            Some(std::slice::from_raw_parts_mut(
                p as *mut f32,
                (*d).maxsize as usize / SAMPLE_BYTES,
            ))
        }
    }

    /// Marks `frames` frames of `channels` interleaved samples as written
    /// from the start of the plane (clamped to the plane's size). A no-op
    /// without a mapped plane or on an input stream's buffer.
    pub fn commit(&mut self, frames: usize, channels: usize) {
        let Some(d) = self.plane().filter(|_| self.writable) else {
            return;
        };
        let stride = channels.saturating_mul(SAMPLE_BYTES);
        // SAFETY: `plane` checked the chunk pointer, which stays valid and
        // ours while the buffer is dequeued; `&mut self` excludes any
        // slice of the plane meanwhile.
        unsafe {
            let size = frames.saturating_mul(stride).min((*d).maxsize as usize);
            let c = &mut *(*d).chunk;
            c.offset = 0;
            c.stride = stride as i32;
            c.size = size as u32;
        }
    }

    /// Frames the graph asks for (playback streams); 0 when unknown.
    pub fn requested(&self) -> u64 {
        // SAFETY: the pw_buffer is valid while dequeued.
        unsafe { self.buf.as_ref().requested }
    }

    /// Sets the size reported in `pw_time.queued` (we use frames).
    pub fn set_size(&mut self, frames: u64) {
        // SAFETY: the pw_buffer is valid and ours while dequeued.
        unsafe { self.buf.as_mut().size = frames }
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        // SAFETY: the buffer we dequeued from this stream, queued back
        // once, still inside its process callback (`dequeue`'s contract).
        unsafe {
            pw::pw_stream_queue_buffer(self.stream, self.buf.as_ptr());
        }
    }
}

/// PipeWire's data loop: the real-time thread that runs `process`. Sources
/// added here run on that same thread, so they may touch the state that
/// `process` owns without any lock.
#[derive(Clone, Copy)]
pub struct DataLoop(*mut pw::pw_loop);

/// Runs the closure that [`DataLoop::run_sync`] passed as `user_data`.
///
/// # Safety
/// `user_data` must point to a live `Option<F>` that nothing else uses
/// during the call (run_sync's `slot`, while it blocks in `invoke`).
unsafe extern "C" fn run_trampoline<F: FnOnce()>(
    _loop: *mut spa::spa_loop,
    _async: bool,
    _seq: u32,
    _data: *const c_void,
    _size: usize,
    user_data: *mut c_void,
) -> std::ffi::c_int {
    // SAFETY: the contract above: `run_sync` passes its `slot` and waits
    // until PipeWire has run this (or returns unrun), without touching it.
    let slot = unsafe { &mut *(user_data as *mut Option<F>) };
    if let Some(f) = slot.take() {
        // A panic must not unwind into the loop.
        if let Err(payload) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
            ffi::drop_payload(payload);
        }
    }
    0
}

impl DataLoop {
    /// The data loop of `context`.
    ///
    /// # Safety
    /// `context` must be live, and the `DataLoop` (or a copy) must not be
    /// used after the context is destroyed: its methods rely on the loop
    /// being alive.
    pub unsafe fn of(context: *mut pw::pw_context) -> Option<DataLoop> {
        // SAFETY: a live context (the contract).
        let dl = unsafe { pw::pw_context_get_data_loop(context) };
        if dl.is_null() {
            return None;
        }
        // SAFETY: the context's data loop, which lives as long as it.
        let l = unsafe { pw::pw_data_loop_get_loop(dl) };
        (!l.is_null()).then_some(DataLoop(l))
    }

    /// Runs `f` on the data thread and waits for it (PipeWire runs it right
    /// here when the loop is not running or this is the data thread), and
    /// says whether it ran. Adding and removing sources goes through this,
    /// because the loop's source lists are not safe to change from another
    /// thread while it polls; so when PipeWire cannot queue `f` (out of
    /// memory or queue space), `f` is dropped unrun rather than run on the
    /// wrong thread.
    pub fn run_sync<F: FnOnce()>(&self, f: F) -> bool {
        let mut slot = Some(f);
        let user = &mut slot as *mut Option<F> as *mut c_void;
        // SAFETY: the loop is alive (`of`'s contract) and its `loop_` is a
        // spa_loop interface. A blocking invoke returns only after the
        // trampoline has run (or without queuing it), so `slot`, which
        // nothing else touches meanwhile, outlives every use of `user`.
        unsafe {
            let lp = (*self.0).loop_;
            ffi::iface_call::<spa::spa_loop_methods, _>(lp as *mut c_void, |m, obj| {
                if let Some(inv) = m.invoke {
                    inv(
                        obj,
                        Some(run_trampoline::<F>),
                        0,
                        ptr::null(),
                        0,
                        true,
                        user,
                    );
                }
            });
        }
        slot.is_none()
    }

    fn utils(&self) -> *mut c_void {
        // SAFETY: the loop is alive (`of`'s contract).
        unsafe { (*self.0).utils as *mut c_void }
    }

    /// Calls `func(data, fd, mask)` on the data thread whenever `fd` is
    /// readable. `fd` stays owned by the caller.
    ///
    /// # Safety
    /// `data` must stay valid until the source drops, and `func` must
    /// accept it; `fd` must outlive the source.
    pub unsafe fn add_io(
        &self,
        fd: std::ffi::c_int,
        func: unsafe extern "C" fn(*mut c_void, std::ffi::c_int, u32),
        data: *mut c_void,
    ) -> Result<DataSource, String> {
        let utils = self.utils();
        let mut source: *mut spa::spa_source = ptr::null_mut();
        self.run_sync(|| {
            // SAFETY: the loop's utils interface, on the data thread (or
            // with the loop not running); `data` and `fd` outlive the
            // source by the caller's contract.
            source = unsafe {
                ffi::iface_call::<spa::spa_loop_utils_methods, _>(utils, |m, obj| match m.add_io {
                    Some(f) => f(obj, fd, spa::SPA_IO_IN, false, Some(func), data),
                    None => ptr::null_mut(),
                })
            };
        });
        if source.is_null() {
            return Err("cannot add a socket to the data loop".into());
        }
        Ok(DataSource { dl: *self, source })
    }

    /// Calls `func(data, expirations)` on the data thread every
    /// `interval_ns`.
    ///
    /// # Safety
    /// `data` must stay valid until the source drops, and `func` must
    /// accept it.
    pub unsafe fn add_timer(
        &self,
        func: unsafe extern "C" fn(*mut c_void, u64),
        data: *mut c_void,
        interval_ns: u64,
    ) -> Result<DataSource, String> {
        let utils = self.utils();
        let mut source: *mut spa::spa_source = ptr::null_mut();
        let dl = *self;
        self.run_sync(|| {
            // SAFETY: as in `add_io`.
            source = unsafe {
                ffi::iface_call::<spa::spa_loop_utils_methods, _>(utils, |m, obj| {
                    match m.add_timer {
                        Some(f) => f(obj, Some(func), data),
                        None => ptr::null_mut(),
                    }
                })
            };
            if !source.is_null() {
                // SAFETY: the timer source just made on this loop.
                unsafe { dl.set_timer_raw(source, interval_ns, interval_ns) };
            }
        });
        if source.is_null() {
            return Err("cannot add a timer to the data loop".into());
        }
        Ok(DataSource { dl: *self, source })
    }

    /// Turns readiness wakeups of io source `source` on or off (from
    /// data-thread callbacks: one `epoll_ctl`, no allocation). Off, the fd
    /// stays registered but never wakes the loop.
    ///
    /// # Safety
    /// `source` must be a live io source of this loop, and this the data
    /// thread (PipeWire stores the mask in the source unsynchronized).
    pub unsafe fn set_io_raw(&self, source: *mut spa::spa_source, enabled: bool) {
        let mask = if enabled { spa::SPA_IO_IN } else { 0 };
        // SAFETY: the loop's utils interface; a live source of it, on its
        // thread (the contract).
        unsafe {
            ffi::iface_call::<spa::spa_loop_utils_methods, _>(self.utils(), |m, obj| {
                if let Some(f) = m.update_io {
                    f(obj, source, mask);
                }
            });
        }
    }

    /// Re-arms timer `source` (from data-thread callbacks) to fire in
    /// `first_ns`, then every `interval_ns`.
    ///
    /// # Safety
    /// `source` must be a live timer source of this loop.
    pub unsafe fn set_timer_raw(
        &self,
        source: *mut spa::spa_source,
        first_ns: u64,
        interval_ns: u64,
    ) {
        let ts = |ns: u64| spa::timespec {
            tv_sec: (ns / 1_000_000_000) as _,
            tv_nsec: (ns % 1_000_000_000) as _,
        };
        // A zero first expiry would disarm the timer.
        let (mut value, mut interval) = (ts(first_ns.max(1)), ts(interval_ns));
        // SAFETY: the loop's utils interface; a live timer source of it
        // (the contract); the timespecs live across the call, which copies
        // them into a timerfd_settime.
        unsafe {
            ffi::iface_call::<spa::spa_loop_utils_methods, _>(self.utils(), |m, obj| {
                if let Some(f) = m.update_timer {
                    f(obj, source, &mut value, &mut interval, false);
                }
            });
        }
    }
}

/// A source on the data loop; removed (on the data thread) on drop, so
/// that once it is dropped its callback is not running and never runs
/// again.
pub struct DataSource {
    dl: DataLoop,
    source: *mut spa::spa_source,
}

impl DataSource {
    /// The raw source (to re-arm a timer from the data thread).
    pub fn as_raw(&self) -> *mut spa::spa_source {
        self.source
    }
}

impl Drop for DataSource {
    fn drop(&mut self) {
        let (utils, source) = (self.dl.utils(), self.source);
        let mut removed = false;
        self.dl.run_sync(|| {
            // SAFETY: our source, made by these utils and destroyed once,
            // here, on its loop's thread (or with the loop not running).
            unsafe {
                ffi::iface_call::<spa::spa_loop_utils_methods, _>(utils, |m, obj| {
                    if let Some(f) = m.destroy_source {
                        f(obj, source);
                        removed = true;
                    }
                });
            }
        });
        if !removed {
            // The source stays registered with a pointer to its owner's
            // state, which is about to be freed: the data thread would call
            // into freed memory. PipeWire fails a blocking invoke only when
            // it runs out of memory or queue space; stopping here is the
            // one sound way out.
            crate::log::error(format_args!(
                "bark: cannot remove a data-loop source on the data thread; aborting"
            ));
            std::process::abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `f` on a `Buffer` over a fake dequeued buffer laid out as
    /// PipeWire lays one out: one plane of `max` bytes of `mem` (or none
    /// when `mapped` is false) with `chunk`, of an output stream when
    /// `writable`. Returns the chunk afterwards.
    fn with_buffer(
        mem: &mut [f32],
        max: u32,
        mapped: bool,
        writable: bool,
        mut chunk: spa::spa_chunk,
        f: impl FnOnce(&mut Buffer),
    ) -> spa::spa_chunk {
        // SAFETY: plain C structs, for which all-zero is valid.
        let (mut data, mut sb, mut pb): (spa::spa_data, spa::spa_buffer, pw::pw_buffer) =
            unsafe { (std::mem::zeroed(), std::mem::zeroed(), std::mem::zeroed()) };
        if mapped {
            data.data = mem.as_mut_ptr().cast();
        }
        data.maxsize = max;
        data.chunk = &mut chunk;
        sb.n_datas = 1;
        sb.datas = &mut data;
        pb.buffer = &mut sb;
        let mut b = Buffer {
            stream: ptr::null_mut(),
            buf: ptr::NonNull::from(&mut pb),
            writable,
        };
        f(&mut b);
        // Not dequeued from a stream: nothing to queue it back to.
        std::mem::forget(b);
        chunk
    }

    fn chunk(offset: u32, size: u32) -> spa::spa_chunk {
        spa::spa_chunk {
            offset,
            size,
            stride: 0,
            flags: 0,
        }
    }

    #[test]
    fn samples_are_the_chunk_clamped_into_the_plane() {
        let mut mem: Vec<f32> = (0..8).map(|i| i as f32).collect();
        let cases: [(u32, u32, &[f32]); 4] = [
            (8, 16, &[2.0, 3.0, 4.0, 5.0]),
            // Past the end: cut at the plane's end.
            (24, 100, &[6.0, 7.0]),
            // An offset beyond the plane wraps, as PipeWire's ring does.
            (40, 4, &[2.0]),
            // A start that is not f32-aligned gives nothing.
            (2, 8, &[]),
        ];
        for (off, size, want) in cases {
            with_buffer(&mut mem, 32, true, false, chunk(off, size), |b| {
                assert_eq!(b.samples(), Some(want), "offset {off} size {size}");
            });
        }
    }

    #[test]
    fn samples_mut_spans_the_plane_and_commit_sets_the_chunk() {
        let mut mem = vec![1.0f32; 8];
        let c = with_buffer(&mut mem, 32, true, true, chunk(4, 4), |b| {
            let out = b.samples_mut().expect("a mapped plane");
            assert_eq!(out.len(), 8);
            out[..6].fill(0.5);
            b.commit(3, 2);
        });
        assert_eq!((c.offset, c.stride, c.size), (0, 8, 24));
        assert_eq!(&mem[..7], &[0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 1.0]);
        // More frames than fit: the size stops at the plane's.
        let c = with_buffer(&mut mem, 32, true, true, chunk(0, 0), |b| b.commit(100, 2));
        assert_eq!(c.size, 32);
    }

    #[test]
    fn an_input_buffer_is_not_written() {
        let mut mem = vec![1.0f32; 8];
        let c = with_buffer(&mut mem, 32, true, false, chunk(0, 32), |b| {
            assert!(b.samples_mut().is_none());
            b.commit(1, 2);
            assert_eq!(b.samples().map(<[f32]>::len), Some(8));
        });
        assert_eq!((c.offset, c.size), (0, 32), "commit must not touch it");
    }

    #[test]
    fn no_mapped_plane_gives_no_samples() {
        let mut mem = vec![0.0f32; 4];
        let c = with_buffer(&mut mem, 16, false, true, chunk(0, 16), |b| {
            assert!(b.samples().is_none());
            assert!(b.samples_mut().is_none());
            b.commit(2, 2);
        });
        assert_eq!(c.size, 16, "commit without a plane changes nothing");
    }
}
