//! DNS-SD (RFC 6763) over multicast DNS (RFC 6762): every node advertises
//! itself as a `_bark._udp` service, and controllers (`bark ls`, `bark
//! set`, `bark web`) and unicast receivers find nodes that way without an
//! address typed in.
//!
//! The responder is the `mdns-sd` crate, in its own thread, in every node's
//! process (never a data thread): one implementation on every platform
//! Bark runs on, headless receivers without Avahi included, and no D-Bus
//! client inside the audio server. It shares UDP port 5353 with Avahi
//! where Avahi runs (both set `SO_REUSEADDR`), and Avahi's browsers see the
//! services (`avahi-browse _bark._udp`).
//!
//! A node advertises and browses only on the interface its audio uses
//! (`local.ifname`, or the one the route to its group or destination goes
//! through), and takes only what is found on that interface's subnet.
//! (mdns-sd opens a socket on every interface when it starts, and sends
//! one empty query on each, before the choice applies: host-side tests
//! turn discovery off altogether with [`DISCOVERY_ENV`].)
//!
//! The service's port is the node's command port; its TXT record (RFC 6763
//! §6) says the rest: `role` (`sender`/`receiver`), `name` (`node.name`),
//! `room` (its name for people), `id` (node id, 16 hex digits), `stream`,
//! `ctl` (a sender's control port, where unicast receivers subscribe), and
//! `key` (the key id, with a key; no key material).

use bark_core::protocol::Role;
use mdns_sd::{IfKind, ServiceDaemon, ServiceEvent, ServiceInfo};
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};

/// The DNS-SD service type.
pub const SERVICE_TYPE: &str = "_bark._udp.local.";

/// Environment variable that turns discovery off for a process when `0`
/// (test harnesses that run nodes on this host's own network).
pub const DISCOVERY_ENV: &str = "BARK_DISCOVERY";

/// Whether discovery runs: the node's setting (`bark.discovery`), unless
/// [`DISCOVERY_ENV`] is `0`.
pub fn enabled(setting: bool) -> bool {
    setting && std::env::var(DISCOVERY_ENV).map_or(true, |v| v != "0")
}

/// The local IPv4 address a node's traffic to `dest` leaves from: that of
/// `ifname` if given (its errors name the setting as `fe` does), else the
/// routing table's choice (a connected UDP socket's address; nothing is
/// sent).
///
/// # Errors
/// No such interface, or no route.
pub fn local_addr(
    dest: SocketAddrV4,
    ifname: Option<&str>,
    fe: crate::net::FrontEnd,
) -> std::io::Result<Ipv4Addr> {
    if let Some(i) = ifname {
        return crate::net::interface_ipv4(i, fe);
    }
    let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
    s.connect(dest)?;
    match s.local_addr()? {
        std::net::SocketAddr::V4(a) => Ok(*a.ip()),
        std::net::SocketAddr::V6(_) => Err(std::io::Error::other("no IPv4 route")),
    }
}

/// What a node says about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Advert {
    /// Sender or receiver.
    pub role: Role,
    /// `node.name`.
    pub node_name: String,
    /// Its name for people (`node.description`, or what a controller set).
    pub room: String,
    /// Node id.
    pub node_id: u64,
    /// Stream it sends or follows (empty: the best one).
    pub stream: String,
    /// Its command port (the service's port).
    pub command_port: u16,
    /// A sender's control port (time requests, subscriptions).
    pub control_port: Option<u16>,
    /// The key id (4 bytes hex), with a key.
    pub key_id: Option<String>,
}

fn role_name(r: Role) -> &'static str {
    match r {
        Role::Sender => "sender",
        Role::Receiver => "receiver",
    }
}

/// `<node.name> <id low 32 bits>`: the name's dots made dashes and the
/// whole cut to 63 bytes at a character boundary (a DNS label).
fn instance_name(node_name: &str, node_id: u64) -> String {
    let tail = format!(" {:08x}", node_id as u32);
    let mut name: String = node_name
        .chars()
        .map(|c| if c == '.' { '-' } else { c })
        .collect();
    let mut end = name.len().min(63 - tail.len());
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    name.truncate(end);
    name + &tail
}

/// A responder thread that advertises one node until dropped.
pub struct Advertiser {
    daemon: ServiceDaemon,
    fullname: String,
}

/// A daemon on the interface of `local` only (loopback: this host only).
fn daemon_on(local: Ipv4Addr) -> Result<ServiceDaemon, String> {
    let d = ServiceDaemon::new().map_err(|e| format!("starting mDNS: {e}"))?;
    let only = |d: &ServiceDaemon| -> Result<(), mdns_sd::Error> {
        d.disable_interface(IfKind::All)?;
        if local.is_loopback() {
            d.enable_interface(IfKind::LoopbackV4)
        } else {
            d.enable_interface(IfKind::Addr(local.into()))
        }
    };
    if let Err(e) = only(&d) {
        shut(&d);
        return Err(format!("choosing mDNS's interface ({local}): {e}"));
    }
    Ok(d)
}

impl Advertiser {
    /// Advertises `a` on the interface with address `local`, from host
    /// `host` (its name, without `.local`).
    ///
    /// # Errors
    /// mDNS could not start (a socket, a thread) or refused the record.
    pub fn start(a: &Advert, local: Ipv4Addr, host: &str) -> Result<Advertiser, String> {
        let daemon = daemon_on(local)?;
        // Unique per node, readable in avahi-browse; one DNS label (no
        // dots), at most 63 bytes.
        let instance = instance_name(&a.node_name, a.node_id);
        let hostname = format!("{}.local.", if host.is_empty() { "bark" } else { host });
        let id = format!("{:016x}", a.node_id);
        let cmd = a.command_port.to_string();
        let ctl = a.control_port.map(|p| p.to_string());
        let mut props: Vec<(&str, &str)> = vec![
            ("role", role_name(a.role)),
            ("name", &a.node_name),
            ("room", &a.room),
            ("id", &id),
            ("stream", &a.stream),
            ("cmd", &cmd),
        ];
        if let Some(c) = &ctl {
            props.push(("ctl", c));
        }
        if let Some(k) = &a.key_id {
            props.push(("key", k));
        }
        let info = ServiceInfo::new(
            SERVICE_TYPE,
            &instance,
            &hostname,
            std::net::IpAddr::V4(local),
            a.command_port,
            &props[..],
        )
        .map_err(|e| format!("the DNS-SD record: {e}"))?;
        let fullname = info.get_fullname().to_string();
        if let Err(e) = daemon.register(info) {
            shut(&daemon);
            return Err(format!("registering with mDNS: {e}"));
        }
        Ok(Advertiser { daemon, fullname })
    }
}

/// How long a drop waits for mDNS's thread to end, so that a module
/// unloaded leaves no socket behind (it takes milliseconds).
const SHUTDOWN_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

fn shut(daemon: &ServiceDaemon) {
    if let Ok(done) = daemon.shutdown() {
        let _ = done.recv_timeout(SHUTDOWN_WAIT);
    }
}

impl Drop for Advertiser {
    fn drop(&mut self) {
        // Goodbye packets (TTL 0) go out before the thread ends (commands
        // run in order); the wait is bounded.
        let _ = self.daemon.unregister(&self.fullname);
        shut(&self.daemon);
    }
}

/// What every adapter does at start: advertises `a` when `setting`
/// (`bark.discovery`) and [`enabled`], on the interface its traffic to
/// `dest` leaves by (`ifname`, or the route), from host `host`. Returns the
/// advertiser (kept for the node's life) and a line to log; a failure is
/// not fatal (the node works, it is only not found by name).
pub fn advertise(
    a: &Advert,
    dest: SocketAddrV4,
    ifname: Option<&str>,
    host: &str,
    fe: crate::net::FrontEnd,
    setting: bool,
) -> (Option<Advertiser>, String) {
    if !enabled(setting) {
        return (None, "DNS-SD off".into());
    }
    let local = match local_addr(dest, ifname, fe) {
        Ok(l) => l,
        Err(e) => return (None, format!("not advertised with DNS-SD: {e}")),
    };
    match Advertiser::start(a, local, host) {
        Ok(ad) => (Some(ad), format!("advertised as {SERVICE_TYPE} on {local}")),
        Err(e) => (None, format!("not advertised with DNS-SD: {e}")),
    }
}

/// A node found by browsing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    /// Sender or receiver.
    pub role: Role,
    /// Node id.
    pub node_id: u64,
    /// `node.name`.
    pub node_name: String,
    /// Its name for people.
    pub room: String,
    /// Stream it sends or follows.
    pub stream: String,
    /// Its address.
    pub addr: Ipv4Addr,
    /// Its command port.
    pub command_port: u16,
    /// A sender's control port.
    pub control_port: Option<u16>,
    /// Its key id, if it has a key.
    pub key_id: Option<String>,
    /// Its DNS-SD instance's full name (what a removal names).
    pub fullname: String,
}

impl Found {
    fn from_info(i: &ServiceInfo) -> Option<Found> {
        let txt = |k: &str| i.get_property_val_str(k).map(str::to_string);
        let role = match i.get_property_val_str("role")? {
            "sender" => Role::Sender,
            "receiver" => Role::Receiver,
            _ => return None,
        };
        let node_id = u64::from_str_radix(i.get_property_val_str("id")?, 16).ok()?;
        let addr = **i.get_addresses_v4().iter().next()?;
        Some(Found {
            role,
            node_id,
            node_name: txt("name").unwrap_or_default(),
            room: txt("room").unwrap_or_default(),
            stream: txt("stream").unwrap_or_default(),
            addr,
            command_port: i.get_port(),
            control_port: i.get_property_val_str("ctl").and_then(|p| p.parse().ok()),
            key_id: txt("key"),
            fullname: i.get_fullname().to_string(),
        })
    }
}

/// Browses for Bark nodes on one interface, in mDNS's thread; the caller
/// takes what was found without blocking.
pub struct Browser {
    daemon: ServiceDaemon,
    /// `None` once dropping: a full channel would hold mDNS's thread.
    events: Option<mdns_sd::Receiver<ServiceEvent>>,
    found: Vec<Found>,
    /// The browse interface's address and netmask: only nodes on its
    /// subnet are taken (mDNS's sockets hear every interface).
    local: Ipv4Addr,
    mask: Ipv4Addr,
}

/// The netmask of the interface with address `local` (/32 if unknown,
/// /8 for the loopback).
fn netmask(local: Ipv4Addr) -> Ipv4Addr {
    if local.is_loopback() {
        return Ipv4Addr::new(255, 0, 0, 0);
    }
    let Ok(list) = nix::ifaddrs::getifaddrs() else {
        return Ipv4Addr::BROADCAST;
    };
    for i in list {
        let Some(a) = i.address.as_ref().and_then(|a| a.as_sockaddr_in()) else {
            continue;
        };
        if a.ip() == local {
            if let Some(m) = i.netmask.as_ref().and_then(|m| m.as_sockaddr_in()) {
                return m.ip();
            }
        }
    }
    Ipv4Addr::BROADCAST
}

/// Whether `addr` is on the subnet of `local`/`mask`.
fn same_subnet(local: Ipv4Addr, mask: Ipv4Addr, addr: Ipv4Addr) -> bool {
    u32::from(local) & u32::from(mask) == u32::from(addr) & u32::from(mask)
}

impl Browser {
    /// Starts browsing on the interface with address `local`.
    ///
    /// # Errors
    /// mDNS could not start.
    pub fn start(local: Ipv4Addr) -> Result<Browser, String> {
        let daemon = daemon_on(local)?;
        let events = daemon
            .browse(SERVICE_TYPE)
            .map_err(|e| format!("browsing {SERVICE_TYPE}: {e}"))?;
        Ok(Browser {
            daemon,
            events: Some(events),
            found: Vec::new(),
            local,
            mask: netmask(local),
        })
    }

    /// Takes the events so far; returns every node known now (by node id,
    /// the newest record of each; a removed service is forgotten).
    pub fn poll(&mut self) -> &[Found] {
        let Some(events) = self.events.as_ref() else {
            return &self.found;
        };
        while let Ok(ev) = events.try_recv() {
            match ev {
                ServiceEvent::ServiceResolved(i) => {
                    if let Some(f) =
                        Found::from_info(&i).filter(|f| same_subnet(self.local, self.mask, f.addr))
                    {
                        self.found
                            .retain(|x| x.node_id != f.node_id && x.fullname != f.fullname);
                        self.found.push(f);
                    }
                }
                ServiceEvent::ServiceRemoved(_, fullname) => {
                    self.found.retain(|x| x.fullname != fullname);
                }
                _ => {}
            }
        }
        &self.found
    }
}

/// A unicast receiver's search for its sender (`bark.unicast`): the
/// advertised sender of its stream (any sender when it follows the best
/// one), kept while it is advertised; another one when it goes.
pub struct SenderFinder {
    browser: Browser,
    stream: String,
    current: Option<(u64, std::net::SocketAddr)>,
}

impl SenderFinder {
    /// Browses on the interface with address `local` for senders of
    /// `stream` (empty: any).
    ///
    /// # Errors
    /// mDNS could not start.
    pub fn start(local: Ipv4Addr, stream: &str) -> Result<SenderFinder, String> {
        Ok(SenderFinder {
            browser: Browser::start(local)?,
            stream: stream.to_string(),
            current: None,
        })
    }

    /// A unicast receiver's search (`bark.unicast`), on the interface of
    /// the route to its `source.ip`:`source.port` (`configured`) or
    /// `ifname`, for senders of `stream`.
    ///
    /// # Errors
    /// Discovery is off ([`DISCOVERY_ENV`]) or cannot start; the message
    /// says so.
    pub fn for_receiver(
        configured: SocketAddrV4,
        ifname: Option<&str>,
        fe: crate::net::FrontEnd,
        stream: &str,
    ) -> Result<SenderFinder, String> {
        if !enabled(true) {
            return Err(format!(
                "unicast by stream name needs DNS-SD ({DISCOVERY_ENV} is 0)"
            ));
        }
        local_addr(configured, ifname, fe)
            .map_err(|e| e.to_string())
            .and_then(|l| SenderFinder::start(l, stream))
            .map_err(|e| format!("unicast by stream name needs DNS-SD: {e}"))
    }

    /// [`SenderFinder::poll`] with the line to log about what was found.
    pub fn poll_logged(&mut self) -> Option<(std::net::SocketAddr, String)> {
        let (to, f) = self.poll()?;
        let line = format!(
            "found the sender of stream {:?} with DNS-SD: {} ({:016x}) at {to}; subscribing",
            f.stream, f.node_name, f.node_id
        );
        Some((to, line))
    }

    /// The sender to subscribe to (its address and control port), when it
    /// is found or changes; `None` while nothing changed. Does not block.
    pub fn poll(&mut self) -> Option<(std::net::SocketAddr, Found)> {
        let stream = self.stream.clone();
        let found = self.browser.poll();
        let wanted = |f: &&Found| {
            f.role == Role::Sender
                && f.control_port.is_some()
                && (stream.is_empty() || f.stream == stream)
        };
        if let Some((id, _)) = self.current {
            if found.iter().filter(wanted).any(|f| f.node_id == id) {
                return None;
            }
        }
        // The newest advertisement among the candidates.
        let f = found.iter().rfind(wanted)?.clone();
        let to = std::net::SocketAddr::V4(SocketAddrV4::new(f.addr, f.control_port?));
        self.current = Some((f.node_id, to));
        Some((to, f))
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The receiver first: mDNS's thread must not block on a full
        // channel while it is asked to stop.
        self.events = None;
        let _ = self.daemon.stop_browse(SERVICE_TYPE);
        shut(&self.daemon);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_names_are_one_short_label() {
        assert_eq!(
            instance_name("bark_source", 0x1234_5678_9abc_def0),
            "bark_source 9abcdef0"
        );
        let long = instance_name(&"é.".repeat(40), 7);
        assert!(
            long.len() <= 63 && !long.contains('.') && long.ends_with(" 00000007"),
            "{long}"
        );
    }

    #[test]
    fn only_the_browse_subnet_counts() {
        let (l, m) = (Ipv4Addr::new(10, 99, 0, 1), Ipv4Addr::new(255, 255, 255, 0));
        assert!(same_subnet(l, m, Ipv4Addr::new(10, 99, 0, 7)));
        assert!(!same_subnet(l, m, Ipv4Addr::new(192, 168, 1, 7)));
        assert!(!same_subnet(
            Ipv4Addr::LOCALHOST,
            Ipv4Addr::new(255, 0, 0, 0),
            l
        ));
    }
}
