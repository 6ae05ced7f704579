"""The agent API: HTTPS with mutual TLS between a deployment's snapshotter daemons.

server.py accepts and routes, routes.py validates each request and calls one member
side (daemon/agent.py, sets/member.py, restore/member.py), client.py is what the
coordinators and errands call it with, tls.py the certificates both ends present.
"""
