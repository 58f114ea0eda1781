//! # Bark's PipeWire modules
//!
//! One shared object serves two PipeWire modules; it takes its role from
//! the name it is loaded under (`make modules` installs it under both):
//!
//! - `libpipewire-module-bark-sink`: a sink, "Bark Network", that sends
//!   what is played into it to the network ([`bark_core::Sender`]).
//! - `libpipewire-module-bark-source`: a receiver that plays the network
//!   stream in sync, as a playback stream or a virtual source
//!   ([`bark_core::Receiver`]).
//!
//! Both are thin adapters: PipeWire streams and UDP sockets around the
//! sans-IO core. Arguments are in [`args`] (and `module.usage`, shown by
//! `pw-cli ls Module`); conf/bark-sink.conf and conf/bark-source.conf show
//! them all with their defaults.
//!
//! Rules kept throughout: no panic crosses into C ([`ffi::guard`] wraps
//! every callback); `process` runs on PipeWire's data thread and neither
//! allocates, locks, logs nor makes syscalls other than non-blocking UDP
//! sends and receives and clock reads; a bad argument fails the load with a
//! logged message and a negative errno, and unloading frees everything.

pub mod args;
pub mod clock;
pub mod ffi;
pub mod format;
pub mod log;
pub mod mailbox;
pub mod module;
pub mod pw;
pub mod remote;
pub mod sink;
pub mod source;
pub mod stats;
pub mod timing;

use crate::ffi::Properties;
use crate::module::Role;
use pipewire_sys as pws;
use std::ffi::{c_char, c_int};
use std::sync::atomic::AtomicBool;

/// `node.link-group` of every Bark node (overridable in `stream.props`).
pub const LINK_GROUP: &str = "bark";

/// The stream properties both roles start from: the user's `stream.props`
/// (SPA-JSON object text) first, then ours on top, so that they cannot
/// turn the node into something else (its name, description, media class,
/// rate and channels); `media.name` and `node.link-group` only by default.
pub fn node_props(
    stream_props: Option<&str>,
    name: &str,
    description: &str,
    media_class: &str,
    rate: u32,
    channels: u8,
) -> Properties {
    let mut props = Properties::new();
    if let Some(sp) = stream_props {
        props.update_json(sp);
    }
    props.set("node.name", name);
    props.set("node.description", description);
    props.set("media.class", media_class);
    props.set_default("media.name", description);
    // WirePlumber never links nodes of one link group to each other: this
    // keeps a receiver from playing into a Bark sink on the same host (a
    // feedback loop), even when that sink is the default.
    props.set_default("node.link-group", LINK_GROUP);
    props.set("audio.rate", &rate.to_string());
    props.set("audio.channels", &channels.to_string());
    props
}

/// # Safety
/// `module` must be the live module being loaded, on the main thread.
unsafe fn set_module_info(module: *mut pws::pw_impl_module, role: Role) {
    let mut p = Properties::new();
    p.set("module.author", "Bark contributors");
    p.set("module.description", role.description());
    p.set("module.usage", role.usage());
    p.set("module.version", env!("CARGO_PKG_VERSION"));
    // SAFETY: a live module (the contract); PipeWire copies the dictionary.
    unsafe { pws::pw_impl_module_update_properties(module, p.dict()) };
}

/// # Safety
/// Called by PipeWire with the module being loaded and its argument string.
unsafe fn init(module: *mut pws::pw_impl_module, args: *const c_char) -> c_int {
    // Counted from the start, so that a load that fails or panics gives
    // it back (it drops here) and one that succeeds keeps it in its state
    // until unloaded.
    let instance = log::Instance::acquire();
    // SAFETY: the module being loaded (the contract).
    let info = unsafe { pws::pw_impl_module_get_info(module) };
    let (name, filename) = if info.is_null() {
        (None, None)
    } else {
        // SAFETY: the module's info, alive as long as the module; its
        // strings are NULL or NUL-terminated, and outlive this call.
        unsafe { (ffi::str_from((*info).name), ffi::str_from((*info).filename)) }
    };
    let Some(role) = filename
        .and_then(Role::from_name)
        .or_else(|| name.and_then(Role::from_name))
    else {
        log_error!(
            "bark: cannot tell the role from the module name {:?}: load it as libpipewire-module-bark-sink or libpipewire-module-bark-source",
            name.or(filename).unwrap_or("?")
        );
        return -libc::EINVAL;
    };
    // SAFETY: the module being loaded, on the main thread (the contract).
    unsafe { set_module_info(module, role) };
    // SAFETY: `args` is NULL or NUL-terminated and alive for the call (the
    // contract); `from_json` copies it.
    let props = Properties::from_json(unsafe { ffi::str_from(args) }.unwrap_or(""));
    // SAFETY: the module being initialized, on the main thread.
    match unsafe { module::load(module, role, &props, instance) } {
        Ok(()) => 0,
        Err(e) => {
            log_error!("{}: cannot load: {}", role.name(), e.msg);
            -e.errno
        }
    }
}

/// The module entry point PipeWire looks up after `dlopen`.
///
/// # Safety
/// Called by PipeWire on its main thread with a module under construction
/// and a NUL-terminated (or NULL) argument string.
#[no_mangle]
pub unsafe extern "C" fn pipewire__module_init(
    module: *mut pws::pw_impl_module,
    args: *const c_char,
) -> c_int {
    ffi::guard(&AtomicBool::new(false), "module init", -libc::EIO, || {
        if module.is_null() {
            return -libc::EINVAL;
        }
        // SAFETY: PipeWire's module-init contract (above), `module` checked.
        unsafe { init(module, args) }
    })
}
