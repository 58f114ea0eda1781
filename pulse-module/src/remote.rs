//! bark-pulse's side of a receiver's settings ([`bark_core::command`]):
//! commands served on its loop, volume and mute applied as its playback
//! stream's own (the sink input's: pavucontrol and `pactl` show them),
//! and a change made there taken back into the settings, read twice a
//! second; the name as the stream's `media.name`; saved across restarts
//! ([`bark_io::state`]).

use bark_core::command::{Settings, MAX_VOLUME, SET_MUTE, SET_NAME, SET_VOLUME};
use bark_io::command::CommandPort;
use libpulse_binding as pulse;
use pulse::callbacks::ListResult;
use pulse::context::Context;
use pulse::volume::{ChannelVolumes, Volume};
use std::time::{Duration, Instant};

/// How often the sink input's volume and mute are read back.
const READ_BACK: Duration = Duration::from_millis(500);

/// Volume changes smaller than this (user scale) are rounding, not a
/// change (PulseAudio's volume steps are 1/65536).
const VOLUME_EPSILON: f32 = 5e-4;

/// The command socket and what is still to be done on the server.
pub struct Remote {
    /// The socket and the settings (saved by it).
    pub port: CommandPort,
    /// Volume and mute still to be set on the stream (a command, or a new
    /// stream).
    apply: bool,
    /// The name still to be set on the stream.
    rename: bool,
    next_read: Instant,
    /// Bumped at every change we make, and for a new stream: a read-back
    /// that was asked for before it (its answer still in flight) is of
    /// the old volume and must not count as a change on the server.
    generation: u64,
    read: crate::pa::Slot<(u64, f32, bool)>,
}

impl Remote {
    /// Wraps the open command socket.
    pub fn new(port: CommandPort) -> Remote {
        Remote {
            port,
            apply: true,
            rename: false,
            next_read: Instant::now(),
            generation: 0,
            read: crate::pa::slot(),
        }
    }

    /// Serves queued commands; returns the settings when they changed (for
    /// the receiver).
    pub fn serve(&mut self, now_ns: u64, wall_ns: u64) -> Option<Settings> {
        let (changed, warning) = self.port.serve(now_ns, wall_ns);
        if let Some(w) = warning {
            log::warn!("{w}");
        }
        if changed == 0 {
            return None;
        }
        self.apply |= changed & (SET_VOLUME | SET_MUTE) != 0;
        self.rename |= changed & SET_NAME != 0;
        let s = *self.port.responder().settings();
        log::info!("a controller changed the settings: {s:?}");
        self.save();
        Some(s)
    }

    /// A new playback stream: it gets the volume, mute and name.
    pub fn new_stream(&mut self) {
        self.apply = true;
        self.rename = true;
        self.generation += 1;
    }

    fn save(&self) {
        if let Some(w) = self.port.save() {
            log::warn!("{w}");
        }
    }

    /// Applies what is pending to sink input `index` of `ctx` and reads
    /// its volume and mute back now and then; returns the settings when a
    /// change made on the server (pavucontrol, `pactl`) altered them.
    pub fn sync(
        &mut self,
        ctx: &Context,
        stream: &mut pulse::stream::Stream,
        channels: u8,
        lp: &crate::pa::Loop,
    ) -> Option<Settings> {
        let index = stream.get_index()?;
        let s = *self.port.responder().settings();
        let mut changed = None;
        let read = self.read.borrow_mut().take();
        if let Some((generation, volume, mute)) = read {
            // A read racing our own change would undo it: only read-backs
            // asked for after our last change count.
            if generation == self.generation && !self.apply {
                let mut local = s;
                let mut mask = 0;
                if (volume - s.volume).abs() >= VOLUME_EPSILON {
                    local.volume = volume;
                    mask |= SET_VOLUME;
                }
                if mute != s.mute {
                    local.mute = mute;
                    mask |= SET_MUTE;
                }
                if mask != 0 && self.port.set_local(mask, &local) != 0 {
                    log::info!(
                        "changed on this host: volume {:.1} %, mute {}",
                        volume * 100.0,
                        mute
                    );
                    self.save();
                    changed = Some(local);
                }
            }
        }
        let mut intro = ctx.introspect();
        if self.apply {
            self.apply = false;
            self.generation += 1;
            let mut cv = ChannelVolumes::default();
            let v =
                Volume((s.volume.clamp(0.0, MAX_VOLUME) * Volume::NORMAL.0 as f32).round() as u32);
            cv.set(channels.max(1), v);
            intro.set_sink_input_volume(index, &cv, None);
            intro.set_sink_input_mute(index, s.mute, None);
            // The read-back waits for the change to land.
            self.next_read = Instant::now() + READ_BACK;
        }
        if self.rename {
            self.rename = false;
            let mut pl = pulse::proplist::Proplist::new()?;
            let _ = pl.set_str(pulse::proplist::properties::MEDIA_NAME, s.name.as_str());
            stream.update_proplist(pulse::proplist::UpdateMode::Replace, &mut pl, |_| {});
        }
        if Instant::now() >= self.next_read {
            self.next_read = Instant::now() + READ_BACK;
            let (slot, g, generation) = (self.read.clone(), lp.guard.clone(), self.generation);
            intro.get_sink_input_info(index, move |r| {
                g.run("sink input info", || {
                    if let ListResult::Item(i) = r {
                        let loudest = i.volume.max().0 as f32 / Volume::NORMAL.0 as f32;
                        *slot.borrow_mut() =
                            Some((generation, loudest.clamp(0.0, MAX_VOLUME), i.mute));
                    }
                });
            });
        }
        changed
    }
}
