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
        let existing = pw::pw_context_get_object(context, c"PipeWire:Interface:Core".as_ptr());
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
        let mut core = pw::pw_context_connect_self(context, ptr::null_mut(), 0);
        if core.is_null() {
            core = pw::pw_context_connect(context, ptr::null_mut(), 0);
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
    /// `data` must stay valid until this `CoreConn` is dropped.
    pub unsafe fn listen(
        &mut self,
        proxy_events: &'static pw::pw_proxy_events,
        core_events: &'static pw::pw_core_events,
        data: *mut c_void,
    ) {
        pw::pw_proxy_add_listener(
            self.core as *mut pw::pw_proxy,
            self.proxy_hook.as_ptr(),
            proxy_events,
            data,
        );
        let hook = self.core_hook.as_ptr();
        ffi::iface_call::<pw::pw_core_methods, _>(self.core as *mut c_void, |m, obj| {
            if let Some(f) = m.add_listener {
                f(obj, hook, core_events, data);
            }
        });
    }

    /// Forgets the core after PipeWire destroyed it (its proxy's destroy
    /// event), so that drop does not touch it.
    pub fn forget(&mut self) {
        // SAFETY: the hooks' lists are being torn down by PipeWire itself;
        // just clear our links.
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
        // SAFETY: the core is alive (else `forget` cleared it).
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
    /// `core` must be live; `data` must stay valid until the stream drops.
    pub unsafe fn new(
        core: *mut pw::pw_core,
        name: &str,
        props: Properties,
        events: &'static pw::pw_stream_events,
        data: *mut c_void,
    ) -> Result<Stream, String> {
        let n = ffi::cstring(name);
        let s = pw::pw_stream_new(core, n.as_ptr(), props.into_raw());
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
        pw::pw_stream_add_listener(s, st.hook.as_ptr(), events, data);
        Ok(st)
    }

    /// Forgets the stream after PipeWire destroyed it itself (from its
    /// destroy event: the core it lives on went away), so that drop does
    /// not destroy it a second time.
    pub fn forget(&mut self) {
        // SAFETY: called from the stream's destroy event, while its hook
        // list still exists; unlinking during emission is supported.
        unsafe { self.hook.remove() };
        self.stream = ptr::null_mut();
    }

    /// The raw stream, for the data-thread accessors.
    pub fn as_ptr(&self) -> *mut pw::pw_stream {
        self.stream
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
        // SAFETY: remove our hook first so that teardown emits nothing into
        // state that is being dropped; then destroy (synchronizes with the
        // data loop).
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
    // PipeWire copies the pod.
    let r = pw::pw_stream_connect(
        stream,
        direction,
        pw::PW_ID_ANY,
        flags,
        params.as_mut_ptr(),
        1,
    );
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
    // SAFETY: returns a static string.
    unsafe {
        ffi::str_from(pw::pw_stream_state_as_string(s))
            .unwrap_or("?")
            .to_owned()
    }
}

/// A repeating timer on the main loop.
pub struct Timer {
    utils: *mut spa::spa_loop_utils,
    source: *mut spa::spa_source,
}

impl Timer {
    /// Calls `func(data, expirations)` every `interval_ns` on `main_loop`.
    ///
    /// # Safety
    /// `main_loop` must be the live main loop; `data` must stay valid until
    /// the timer drops.
    pub unsafe fn new(
        main_loop: *mut pw::pw_loop,
        func: unsafe extern "C" fn(*mut c_void, u64),
        data: *mut c_void,
        interval_ns: u64,
    ) -> Result<Timer, String> {
        let utils = (*main_loop).utils;
        let source = ffi::iface_call::<spa::spa_loop_utils_methods, _>(
            utils as *mut c_void,
            |m, obj| match m.add_timer {
                Some(f) => f(obj, Some(func), data),
                None => ptr::null_mut(),
            },
        );
        if source.is_null() {
            return Err("cannot add a main-loop timer".into());
        }
        let ts = spa::timespec {
            tv_sec: (interval_ns / 1_000_000_000) as _,
            tv_nsec: (interval_ns % 1_000_000_000) as _,
        };
        let (mut value, mut interval) = (ts, ts);
        ffi::iface_call::<spa::spa_loop_utils_methods, _>(utils as *mut c_void, |m, obj| {
            if let Some(f) = m.update_timer {
                f(obj, source, &mut value, &mut interval, false);
            }
        });
        Ok(Timer { utils, source })
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        // SAFETY: the source was made by this loop's utils and not yet destroyed.
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
    let mut t: pw::pw_time = std::mem::zeroed();
    pw::pw_stream_get_time_n(stream, &mut t, std::mem::size_of::<pw::pw_time>());
    t
}

/// A dequeued buffer, queued back on drop.
pub struct Buffer {
    stream: *mut pw::pw_stream,
    buf: *mut pw::pw_buffer,
}

impl Buffer {
    /// Dequeues a buffer; `None` when none is available.
    ///
    /// # Safety
    /// Call on the data thread from `process`, with a live stream.
    pub unsafe fn dequeue(stream: *mut pw::pw_stream) -> Option<Buffer> {
        let buf = pw::pw_stream_dequeue_buffer(stream);
        (!buf.is_null()).then_some(Buffer { stream, buf })
    }

    /// The first data plane, when it is mapped memory.
    pub fn data(&mut self) -> Option<&mut spa::spa_data> {
        // SAFETY: PipeWire keeps the buffer valid while dequeued; we check
        // every pointer before use.
        unsafe {
            let sb = (*self.buf).buffer;
            if sb.is_null() || (*sb).n_datas < 1 || (*sb).datas.is_null() {
                return None;
            }
            let d = &mut *(*sb).datas;
            (!d.data.is_null() && !d.chunk.is_null()).then_some(d)
        }
    }

    /// Frames the graph asks for (playback streams); 0 when unknown.
    pub fn requested(&self) -> u64 {
        // SAFETY: valid while dequeued.
        unsafe { (*self.buf).requested }
    }

    /// Sets the size reported in `pw_time.queued` (we use frames).
    pub fn set_size(&mut self, frames: u64) {
        // SAFETY: valid while dequeued.
        unsafe { (*self.buf).size = frames }
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        // SAFETY: returns the buffer we dequeued from this stream.
        unsafe {
            pw::pw_stream_queue_buffer(self.stream, self.buf);
        }
    }
}

/// Interleaved `f32` samples in a mapped data plane: the valid region
/// (`chunk.offset`, `chunk.size`) for reading.
pub fn read_samples(d: &spa::spa_data) -> &[f32] {
    // SAFETY: `data` maps `maxsize` bytes; the chunk region is clamped into it.
    unsafe {
        let c = &*d.chunk;
        let max = d.maxsize as usize;
        if max == 0 {
            return &[];
        }
        let off = (c.offset as usize) % max;
        let size = (c.size as usize).min(max - off);
        let p = (d.data as *const u8).add(off);
        if p.align_offset(std::mem::align_of::<f32>()) != 0 {
            return &[];
        }
        std::slice::from_raw_parts(p as *const f32, size / 4)
    }
}

/// The whole data plane as `f32` for writing.
pub fn write_samples(d: &mut spa::spa_data) -> &mut [f32] {
    // SAFETY: `data` maps `maxsize` bytes.
    unsafe {
        let p = d.data as *mut u8;
        if p.align_offset(std::mem::align_of::<f32>()) != 0 {
            return &mut [];
        }
        std::slice::from_raw_parts_mut(p as *mut f32, d.maxsize as usize / 4)
    }
}

/// Marks `frames` frames of `stride` bytes as written at offset 0.
pub fn set_chunk(d: &mut spa::spa_data, frames: usize, stride: usize) {
    // SAFETY: the chunk pointer was checked when the plane was fetched.
    unsafe {
        let c = &mut *d.chunk;
        c.offset = 0;
        c.stride = stride as i32;
        c.size = (frames * stride) as u32;
    }
}

/// PipeWire's data loop: the real-time thread that runs `process`. Sources
/// added here run on that same thread, so they may touch the state that
/// `process` owns without any lock.
#[derive(Clone, Copy)]
pub struct DataLoop(*mut pw::pw_loop);

unsafe extern "C" fn run_trampoline<F: FnOnce()>(
    _loop: *mut spa::spa_loop,
    _async: bool,
    _seq: u32,
    _data: *const c_void,
    _size: usize,
    user_data: *mut c_void,
) -> std::ffi::c_int {
    let slot = &mut *(user_data as *mut Option<F>);
    if let Some(f) = slot.take() {
        // A panic must not unwind into the loop; `f` guards its own work.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    }
    0
}

impl DataLoop {
    /// The data loop of `context`.
    ///
    /// # Safety
    /// `context` must be live.
    pub unsafe fn of(context: *mut pw::pw_context) -> Option<DataLoop> {
        let dl = pw::pw_context_get_data_loop(context);
        if dl.is_null() {
            return None;
        }
        let l = pw::pw_data_loop_get_loop(dl);
        (!l.is_null()).then_some(DataLoop(l))
    }

    /// Runs `f` on the data thread and waits for it (runs it here when the
    /// loop is not running or this is the data thread). Adding and removing
    /// sources goes through this, because the loop's source lists are not
    /// safe to change from another thread while it polls.
    pub fn run_sync(&self, f: impl FnOnce()) {
        let mut slot = Some(f);
        let user = &mut slot as *mut Option<_> as *mut c_void;
        // SAFETY: a live loop; `slot` outlives the blocking call.
        unsafe {
            let lp = (*self.0).loop_;
            ffi::iface_call::<spa::spa_loop_methods, _>(lp as *mut c_void, |m, obj| {
                if let Some(inv) = m.invoke {
                    inv(
                        obj,
                        Some(run_trampoline_of(&slot)),
                        0,
                        ptr::null(),
                        0,
                        true,
                        user,
                    );
                }
            });
        }
        // Not run (no invoke method): run it here rather than lose it.
        if let Some(f) = slot.take() {
            f();
        }
    }

    fn utils(&self) -> *mut c_void {
        // SAFETY: a live loop.
        unsafe { (*self.0).utils as *mut c_void }
    }

    /// Calls `func(data, fd, mask)` on the data thread whenever `fd` is
    /// readable. `fd` stays owned by the caller.
    ///
    /// # Safety
    /// `data` must stay valid until the source drops; `fd` must outlive it.
    pub unsafe fn add_io(
        &self,
        fd: std::ffi::c_int,
        func: unsafe extern "C" fn(*mut c_void, std::ffi::c_int, u32),
        data: *mut c_void,
    ) -> Result<DataSource, String> {
        let utils = self.utils();
        let mut source: *mut spa::spa_source = ptr::null_mut();
        self.run_sync(|| {
            source =
                ffi::iface_call::<spa::spa_loop_utils_methods, _>(utils, |m, obj| match m.add_io {
                    Some(f) => f(obj, fd, spa::SPA_IO_IN, false, Some(func), data),
                    None => ptr::null_mut(),
                });
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
    /// `data` must stay valid until the source drops.
    pub unsafe fn add_timer(
        &self,
        func: unsafe extern "C" fn(*mut c_void, u64),
        data: *mut c_void,
        interval_ns: u64,
    ) -> Result<DataSource, String> {
        let utils = self.utils();
        let mut source: *mut spa::spa_source = ptr::null_mut();
        self.run_sync(|| {
            source = ffi::iface_call::<spa::spa_loop_utils_methods, _>(utils, |m, obj| {
                match m.add_timer {
                    Some(f) => f(obj, Some(func), data),
                    None => ptr::null_mut(),
                }
            });
        });
        if source.is_null() {
            return Err("cannot add a timer to the data loop".into());
        }
        let s = DataSource { dl: *self, source };
        let dl = *self;
        self.run_sync(|| dl.set_timer(&s, interval_ns));
        Ok(s)
    }

    /// Re-arms timer `s` to fire every `interval_ns`. Call on the data
    /// thread (from one of its callbacks): no allocation, one timerfd call.
    pub fn set_timer(&self, s: &DataSource, interval_ns: u64) {
        // SAFETY: `s` is a live source of this loop.
        unsafe { self.set_timer_raw(s.source, interval_ns, interval_ns) }
    }

    /// Turns readiness wakeups of io source `source` on or off (from
    /// data-thread callbacks: one `epoll_ctl`, no allocation). Off, the fd
    /// stays registered but never wakes the loop.
    ///
    /// # Safety
    /// `source` must be a live io source of this loop.
    pub unsafe fn set_io_raw(&self, source: *mut spa::spa_source, enabled: bool) {
        let mask = if enabled { spa::SPA_IO_IN } else { 0 };
        ffi::iface_call::<spa::spa_loop_utils_methods, _>(self.utils(), |m, obj| {
            if let Some(f) = m.update_io {
                f(obj, source, mask);
            }
        });
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
        let (mut value, mut interval) = (ts(first_ns.max(1)), ts(interval_ns));
        ffi::iface_call::<spa::spa_loop_utils_methods, _>(self.utils(), |m, obj| {
            if let Some(f) = m.update_timer {
                f(obj, source, &mut value, &mut interval, false);
            }
        });
    }
}

fn run_trampoline_of<F: FnOnce()>(
    _: &Option<F>,
) -> unsafe extern "C" fn(
    *mut spa::spa_loop,
    bool,
    u32,
    *const c_void,
    usize,
    *mut c_void,
) -> std::ffi::c_int {
    run_trampoline::<F>
}

/// A source on the data loop; removed (on the data thread) on drop.
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
        self.dl.run_sync(|| {
            // SAFETY: our source, destroyed once, on its loop's thread.
            unsafe {
                ffi::iface_call::<spa::spa_loop_utils_methods, _>(utils, |m, obj| {
                    if let Some(f) = m.destroy_source {
                        f(obj, source);
                    }
                });
            }
        });
    }
}
