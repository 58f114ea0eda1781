#!/usr/bin/python3
"""A GStreamer player for the lab: plays a file through `pulsesink` (a real
libpulse client, as most desktop players are) into a sink, and pauses and
resumes at given times, as a user pressing pause does: the pipeline goes to
PAUSED, which corks the PulseAudio stream, and the sink idles.

    gst-player.py FILE --device SINK [--pause AT:FOR]... [--timeout S]

AT and FOR are seconds of wall time since playback started. Exits 0 at the
end of the stream, 1 on an error or after --timeout seconds.
"""
import argparse
import sys

import gi

gi.require_version("Gst", "1.0")
from gi.repository import GLib, Gst  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("file")
    ap.add_argument("--device", required=True, help="sink name for pulsesink")
    ap.add_argument("--pause", action="append", default=[], metavar="AT:FOR")
    ap.add_argument("--timeout", type=float, default=120.0)
    a = ap.parse_args()
    pauses = []
    for p in a.pause:
        at, dur = (float(v) for v in p.split(":"))
        pauses.append((at, dur))
    pauses.sort()

    Gst.init(None)
    desc = (
        "filesrc name=src ! decodebin ! audioconvert ! audioresample ! "
        "pulsesink name=out"
    )
    pipe = Gst.parse_launch(desc)
    pipe.get_by_name("src").set_property("location", a.file)
    pipe.get_by_name("out").set_property("device", a.device)
    loop = GLib.MainLoop()
    status = {"rc": 1}

    def on_message(_bus, msg):
        if msg.type == Gst.MessageType.EOS:
            status["rc"] = 0
            loop.quit()
        elif msg.type == Gst.MessageType.ERROR:
            err, dbg = msg.parse_error()
            print(f"gst-player: {err} ({dbg})", file=sys.stderr)
            loop.quit()

    bus = pipe.get_bus()
    bus.add_signal_watch()
    bus.connect("message", on_message)

    def pause(dur):
        print(f"gst-player: pause for {dur} s", file=sys.stderr)
        pipe.set_state(Gst.State.PAUSED)
        GLib.timeout_add(int(dur * 1000), resume)
        return False

    def resume():
        print("gst-player: resume", file=sys.stderr)
        pipe.set_state(Gst.State.PLAYING)
        return False

    # Pause times count wall time from the start, pauses included.
    for at, dur in pauses:
        GLib.timeout_add(int(at * 1000), pause, dur)
    GLib.timeout_add(int(a.timeout * 1000), loop.quit)
    pipe.set_state(Gst.State.PLAYING)
    loop.run()
    pipe.set_state(Gst.State.NULL)
    return status["rc"]


if __name__ == "__main__":
    sys.exit(main())
