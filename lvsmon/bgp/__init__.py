"""Scale-out: announce virtual IPs over BGP through the operator's routing daemon.

Every director announces the VIPs it can serve; the upstream router spreads
flows by ECMP. lvsmon never speaks BGP itself: it owns a generated fragment of
the routing daemon's config (BIRD 2 today, behind the `RoutingDaemon` seam)
and a liveness device that dies with the process, so a crashed lvsmon takes
its routes with it.
"""
