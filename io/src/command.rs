//! A node's command socket with its [`Responder`]: the one copy of "read
//! commands, apply each once, ack to the source" that every adapter runs
//! on its main loop (the PipeWire modules', bark-pulse's, `bark
//! receive`'s), never on a data thread.

use crate::dropwarn::Throttle;
use crate::net::{command_socket, UdpSocket};
use bark_core::auth::Key;
use bark_core::command::{Handled, Responder, Settings, ACK_BUF};
use bark_core::protocol::Role;
use std::io;
use std::os::fd::RawFd;
use std::path::PathBuf;

/// Commands read per [`CommandPort::serve`]: a flood cannot hold the
/// caller's loop (the rate limit drops most of them anyway).
pub const MAX_PER_SERVE: usize = 64;

/// The command socket and its responder.
pub struct CommandPort {
    sock: UdpSocket,
    responder: Responder,
    ack: [u8; ACK_BUF],
    dropped: u64,
    warn: Throttle,
    last_why: &'static str,
    /// Where the settings are saved ([`crate::state`]), if anywhere.
    state: Option<PathBuf>,
}

/// Who a node is, for its command socket.
#[derive(Clone, Copy, Debug)]
pub struct Identity<'a> {
    /// `node.name`: names its state file.
    pub node_name: &'a str,
    /// `node.description`: the name for people it starts with.
    pub description: &'a str,
    /// Its node id (status packets).
    pub node_id: u64,
    /// Sender or receiver.
    pub role: Role,
    /// `bark.command.port` (0: any).
    pub port: u16,
}

impl CommandPort {
    /// Opens the command socket on `port` (0: any) for node `node_id` of
    /// `role`, with its settings at start, sealing with `key` if set.
    ///
    /// # Errors
    /// Socket or bind failures; no randomness for the sealer.
    pub fn open(
        port: u16,
        node_id: u64,
        role: Role,
        settings: Settings,
        key: Option<&Key>,
        now_ns: u64,
    ) -> io::Result<CommandPort> {
        let sock = command_socket(port)?;
        let port = sock.local_addr()?.port();
        let responder = Responder::new(node_id, role, settings, port, key, now_ns)
            .map_err(|e| io::Error::other(e.to_string()))?;
        Ok(CommandPort {
            sock,
            responder,
            ack: [0; ACK_BUF],
            dropped: 0,
            warn: Throttle::default(),
            last_why: "",
            state: None,
        })
    }

    /// Opens the command socket of node `id` with the settings it starts
    /// from: `configured` (its core's, named `id.description`), with those saved under
    /// its `node.name` restored except the fields in `given` (set
    /// explicitly in its configuration, which wins; [`crate::state`]).
    /// Later changes are saved there by [`CommandPort::save`]. Returns a
    /// warning to log when the saved file could not be used.
    ///
    /// # Errors
    /// Socket or bind failures; no randomness for the sealer.
    pub fn restored(
        id: &Identity<'_>,
        configured: &Settings,
        given: u16,
        key: Option<&Key>,
        now_ns: u64,
    ) -> io::Result<(CommandPort, Option<String>)> {
        let configured = &Settings {
            name: bark_core::command::Label::new(id.description),
            ..*configured
        };
        let state = crate::state::path(id.node_name);
        // Only the fields of its role come back (a file edited by hand, or
        // a node name reused for the other role).
        let fields = match id.role {
            Role::Receiver => bark_core::command::RECEIVER_FIELDS,
            Role::Sender => bark_core::command::SENDER_FIELDS,
        };
        let (initial, warning) =
            crate::state::restore(state.as_deref(), configured, given | !fields);
        let mut port = CommandPort::open(id.port, id.node_id, id.role, initial, key, now_ns)?;
        port.state = state;
        Ok((port, warning))
    }

    /// Saves the settings for the next start (after a change; a file
    /// write, so never from a data thread). Returns a warning to log when
    /// it failed.
    pub fn save(&self) -> Option<String> {
        let p = self.state.as_deref()?;
        let r = self.responder();
        crate::state::save(p, r.fields(), r.settings())
            .err()
            .map(|e| format!("cannot save settings to {}: {e}", p.display()))
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.responder.port()
    }

    /// The socket, for the caller's poll set or loop source.
    pub fn fd(&self) -> RawFd {
        self.sock.fd()
    }

    /// For the caller's `wait_readable`.
    pub fn socket(&self) -> &UdpSocket {
        &self.sock
    }

    /// The responder (settings, counts).
    pub fn responder(&self) -> &Responder {
        &self.responder
    }

    /// What DNS-SD says of the node this port serves
    /// ([`crate::discovery::advertise`]): its role, id, room name and
    /// stream as the responder has them now, this port; `node_name` is
    /// its `node.name`, `control_port` a sender's (time requests,
    /// subscriptions), `key` the key it seals with (its id is advertised).
    pub fn advert(
        &self,
        node_name: &str,
        control_port: Option<u16>,
        key: Option<&Key>,
    ) -> crate::discovery::Advert {
        let r = &self.responder;
        crate::discovery::Advert {
            role: r.role(),
            node_name: node_name.to_string(),
            room: r.settings().name.as_str().to_string(),
            node_id: r.node_id(),
            stream: r.settings().stream.as_str().to_string(),
            command_port: self.port(),
            control_port,
            key_id: key.map(|k| k.id().to_string()),
        }
    }

    /// A change made on the node itself (see [`Responder::set_local`]).
    pub fn set_local(&mut self, mask: u16, s: &Settings) -> u16 {
        self.responder.set_local(mask, s)
    }

    /// Reads the queued commands (at most [`MAX_PER_SERVE`]) at `now_ns`
    /// (monotonic) and `wall_ns` (CLOCK_REALTIME, for the key check),
    /// applies them and sends the acks. Returns the mask of the settings
    /// that changed (`SET_*`; read them from [`CommandPort::responder`]),
    /// and a warning to log when datagrams were dropped (the first at
    /// once, then at most one a minute).
    pub fn serve(&mut self, now_ns: u64, wall_ns: u64) -> (u16, Option<String>) {
        let mut changed = 0;
        let mut error = None;
        // A command is COMMAND_LEN bytes plus the seal; anything longer is
        // not one (cut, counted, dropped).
        let mut rx = [0u8; ACK_BUF + 64];
        for _ in 0..MAX_PER_SERVE {
            let d = match self.sock.recv(&mut rx) {
                Ok(Some(d)) => d,
                Ok(None) => break,
                Err(e) => {
                    error = Some(format!("receiving: {e}"));
                    break;
                }
            };
            if d.truncated {
                self.dropped += 1;
                self.last_why = "longer than a command";
                continue;
            }
            let (h, len) = self
                .responder
                .handle(now_ns, wall_ns, &mut rx[..d.len], &mut self.ack);
            match h {
                Handled::Changed(m) => changed |= m,
                Handled::Unchanged => {}
                Handled::Dropped(why) => {
                    self.dropped += 1;
                    self.last_why = why;
                }
            }
            if let Some(n) = len {
                if let Err(e) = self.sock.send_to(&self.ack[..n], d.from.into()) {
                    error = Some(format!("sending the ack to {}: {e}", d.from));
                }
            }
        }
        let mut warning = self.warn.due(now_ns, self.dropped).map(|n| {
            format!(
                "command socket: dropped {n} datagram(s) (last: {})",
                self.last_why
            )
        });
        if let Some(e) = error {
            warning = Some(match warning {
                Some(w) => format!("{w}; {e}"),
                None => format!("command socket: {e}"),
            });
        }
        (changed, warning)
    }
}
