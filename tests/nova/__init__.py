"""ipxe.LibvirtDriver through Nova's functional harness (.venv-nova-RELEASE).

Nova's functional tests are eventlet-monkey-patched by importing
``nova.tests.functional``.  That must come before anything imports
oslo.db or oslo.context (``nova.context`` does): oslo.db keeps each
context's transaction in a ``threading.local`` made at import time, and
one made before the patching is shared by every green thread.  Then a
live migration's monitor thread finds the operation thread's reader
transaction on the shared context and its ``migration.save()`` fails
("Can't upgrade a READER transaction to a WRITER mid-transaction"), so
the migration never completes: what made the live-migration tests time
out on Nova 33, whose fake libvirt reports the migration job as running
until the test completes it.  nova-compute itself patches first
(``nova/cmd/__init__.py``).
"""

import nova.tests.functional  # noqa: F401  monkey-patches, first
