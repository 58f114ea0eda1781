//! Small safe wrappers over the C side: panic guards for callbacks, owned
//! `pw_properties`, and listener hooks.

use libspa_sys as spa;
use pipewire_sys as pw;
use std::any::Any;
use std::ffi::{c_char, c_void, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};

/// Runs `f`, catching any panic so that it never unwinds into C. On a panic
/// `default` is returned and, the first time that `flag` sees one, an error
/// is logged (`what` names the callback). The flag stays set so that callers
/// can treat their state as poisoned from then on.
///
/// Use it around the body of every `extern "C"` function.
pub fn guard<R>(flag: &AtomicBool, what: &str, default: R, f: impl FnOnce() -> R) -> R {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) => {
            if !flag.swap(true, Ordering::Relaxed) {
                let msg = payload
                    .downcast_ref::<&str>()
                    .copied()
                    .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
                    .unwrap_or("(no message)");
                // Once only, so acceptable even on the data thread.
                crate::log::error(format_args!(
                    "bark: panic in {what}: {msg}; the module is disabled until unloaded"
                ));
            }
            drop_payload(payload);
            default
        }
    }
}

/// Drops a caught panic's payload without letting a panic in its own
/// `Drop` unwind (into C, which aborts the process): that second payload
/// is leaked instead.
pub fn drop_payload(payload: Box<dyn Any + Send>) {
    if let Err(again) = catch_unwind(AssertUnwindSafe(move || drop(payload))) {
        std::mem::forget(again);
    }
}

/// Makes a C string, replacing interior NULs (which PipeWire strings cannot
/// carry) with spaces.
pub fn cstring(s: &str) -> CString {
    CString::new(s.replace('\0', " ")).unwrap_or_default()
}

/// Borrows a C string as UTF-8; `None` for a NULL pointer or invalid UTF-8.
///
/// # Safety
/// `p` must be NULL or point to a NUL-terminated string that outlives `'a`.
pub unsafe fn str_from<'a>(p: *const c_char) -> Option<&'a str> {
    if p.is_null() {
        None
    } else {
        // SAFETY: non-NULL, NUL-terminated and alive for 'a (the contract).
        unsafe { CStr::from_ptr(p).to_str().ok() }
    }
}

/// An owned `pw_properties`: a string dictionary, as PipeWire passes around.
pub struct Properties(NonNull<pw::pw_properties>);

impl Properties {
    /// Empty properties.
    pub fn new() -> Self {
        // SAFETY: a NULL-terminated empty argument list.
        let p = unsafe { pw::pw_properties_new(std::ptr::null()) };
        Properties(NonNull::new(p).expect("pw_properties_new: out of memory"))
    }

    /// Parses a PipeWire (SPA-JSON) object string such as a module's
    /// arguments, `{ key = value ... }`. Nested objects and arrays are kept
    /// as their JSON text.
    pub fn from_json(s: &str) -> Self {
        let mut p = Self::new();
        p.update_json(s);
        p
    }

    /// Merges the keys of an SPA-JSON object string into these properties.
    pub fn update_json(&mut self, s: &str) {
        let c = cstring(s);
        // SAFETY: valid properties and a NUL-terminated string of that length.
        unsafe { pw::pw_properties_update_string(self.0.as_ptr(), c.as_ptr(), c.as_bytes().len()) };
    }

    /// The value of `key`, if set and valid UTF-8.
    pub fn get(&self, key: &str) -> Option<&str> {
        let k = cstring(key);
        // SAFETY: the returned string lives as long as the entry, which
        // `&self` keeps (no mutation while borrowed).
        unsafe { str_from(pw::pw_properties_get(self.0.as_ptr(), k.as_ptr())) }
    }

    /// Sets `key` to `value`.
    pub fn set(&mut self, key: &str, value: &str) {
        let (k, v) = (cstring(key), cstring(value));
        // SAFETY: valid properties; PipeWire copies both strings.
        unsafe { pw::pw_properties_set(self.0.as_ptr(), k.as_ptr(), v.as_ptr()) };
    }

    /// Sets `key` to `value` unless it is already set.
    pub fn set_default(&mut self, key: &str, value: &str) {
        if self.get(key).is_none() {
            self.set(key, value);
        }
    }

    /// All keys, in dictionary order.
    pub fn keys(&self) -> Vec<String> {
        // SAFETY: `dict.items` holds `n_items` valid entries.
        unsafe {
            let d = &self.0.as_ref().dict;
            (0..d.n_items as usize)
                .filter_map(|i| str_from((*d.items.add(i)).key).map(str::to_owned))
                .collect()
        }
    }

    /// The dictionary, valid while `self` is.
    pub fn dict(&self) -> *const spa::spa_dict {
        // SAFETY: the dict is the first field of a live pw_properties.
        unsafe { &self.0.as_ref().dict }
    }

    /// Gives up ownership (for APIs that take it, like `pw_stream_new`).
    pub fn into_raw(self) -> *mut pw::pw_properties {
        let p = self.0.as_ptr();
        std::mem::forget(self);
        p
    }
}

impl Default for Properties {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Properties {
    fn drop(&mut self) {
        // SAFETY: we own it.
        unsafe { pw::pw_properties_free(self.0.as_ptr()) }
    }
}

/// A listener hook: boxed so that its address stays fixed while PipeWire
/// links it into a hook list. Removing it twice, or removing one that was
/// never added, is harmless. Whoever adds it to a list must remove it
/// before it drops (it cannot tell on its own whether the list still
/// exists).
pub struct Hook(Box<spa::spa_hook>);

impl Hook {
    /// A hook not yet added to any list.
    pub fn new() -> Self {
        // SAFETY: an all-zero spa_hook is the "unlinked" state.
        Hook(Box::new(unsafe { std::mem::zeroed() }))
    }

    /// The pointer to pass to `*_add_listener`.
    pub fn as_ptr(&mut self) -> *mut spa::spa_hook {
        &mut *self.0
    }

    /// Unlinks the hook from its list, if it is in one.
    ///
    /// # Safety
    /// The list it was added to must still exist.
    pub unsafe fn remove(&mut self) {
        if !self.0.link.prev.is_null() {
            // SAFETY: linked (non-NULL `prev`) into a list that still
            // exists (the contract), so its neighbours are live hooks.
            unsafe { spa::spa_hook_remove(&mut *self.0) };
            // spa_hook_remove leaves stale links; clear them so a second
            // call is a no-op.
            self.0.link.prev = std::ptr::null_mut();
            self.0.link.next = std::ptr::null_mut();
        }
    }
}

impl Default for Hook {
    fn default() -> Self {
        Self::new()
    }
}

/// Calls a method of a SPA interface (what the C `spa_interface_call`
/// macros do): `f` gets the method table and the object pointer.
///
/// # Safety
/// `iface` must point to a live interface whose methods table is of type `M`.
pub unsafe fn iface_call<M, R>(iface: *mut c_void, f: impl FnOnce(&M, *mut c_void) -> R) -> R {
    // SAFETY: a live interface whose `funcs` is an `M` table (the contract);
    // both stay alive for the call.
    let (funcs, data) = unsafe {
        let i = &*(iface as *const spa::spa_interface);
        (&*(i.cb.funcs as *const M), i.cb.data)
    };
    f(funcs, data)
}
