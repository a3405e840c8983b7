"""ipxe.LibvirtDriver through Nova's functional harness (.venv-nova-RELEASE).

Nova's functional tests run eventlet-monkey-patched, and the patching must
come before anything imports oslo.db or oslo.context (``nova.context``
does, so do ``nova.conf`` and oslo.log): oslo.db keeps each context's
transaction in a ``threading.local`` made at import time, and one made
before the patching is shared by every green thread.  Then a live
migration's monitor thread finds the operation thread's reader
transaction on the shared context and its ``migration.save()`` fails
("Can't upgrade a READER transaction to a WRITER mid-transaction"), so the
migration never completes: what made the live-migration tests time out on
Nova 32 and 33, whose fake libvirt reports the migration job as running
until the test completes it.  nova-compute itself patches first
(``nova/cmd/__init__.py``).

Where Nova's own tests patch differs by release: importing
``nova.monkey_patch`` patches in Nova 31; Nova 32 calls
``monkey_patch.patch()`` in ``nova.test``, Nova 33 and 34 in
``nova.tests.functional``.  Every test module here imports this package
first, so it patches as the release does, before anything else.
"""

from nova import monkey_patch

if hasattr(monkey_patch, 'patch'):  # Nova 32 on; Nova 31 patched above
    monkey_patch.patch()
