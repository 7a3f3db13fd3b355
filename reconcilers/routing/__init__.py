"""The routing policy: while a service sleeps, its load balancer routes go to the activator,
which wakes it on the first request; once it serves again, they come back. It also tells when
every wake ends (a running task behind healthy targets)."""
