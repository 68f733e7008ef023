"""``python -m charhub_ops.cli``: the same app as the ``charhub-ops`` script."""

from charhub_ops.cli import main

main()
