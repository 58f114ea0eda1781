#!/usr/bin/python3
"""Browses _bark._udp with python-zeroconf (Debian's python3-zeroconf): an
mDNS/DNS-SD implementation independent of Bark's, so that what the nodes
advertise is checked against a real peer. Prints one JSON list of the
services resolved within --seconds: instance, address, port, TXT.

  mdns-browse.py --interface IPV4 [--seconds S]
"""
import argparse
import json
import time

from zeroconf import ServiceBrowser, ServiceStateChange, Zeroconf

TYPE = "_bark._udp.local."


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--interface", required=True)
    ap.add_argument("--seconds", type=float, default=3.0)
    a = ap.parse_args()
    zc = Zeroconf(interfaces=[a.interface])
    names = set()

    def on_change(zeroconf, service_type, name, state_change):
        if state_change is ServiceStateChange.Added:
            names.add(name)

    ServiceBrowser(zc, TYPE, handlers=[on_change])
    time.sleep(a.seconds)
    out = []
    for name in sorted(names):
        info = zc.get_service_info(TYPE, name, timeout=2000)
        if info is None:
            continue
        out.append({
            "instance": name,
            "addresses": info.parsed_addresses(),
            "port": info.port,
            "txt": {k.decode(): (v.decode() if v is not None else None)
                    for k, v in info.properties.items()},
        })
    zc.close()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
