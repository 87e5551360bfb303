"""``python -m gmse_cli.training.torchrun_entry ARGS``: torchrun (``torch.distributed.run``) as
``uscl train --launcher torchrun`` starts it, ending on a signal without a traceback.

torchrun turns the SIGINT or SIGTERM it passes on to its workers into a SignalException that
it re-raises, a 15-line traceback under the workers' one 'aborted' line; here it is the exit
code a shell gives a process the signal stopped (130 for SIGINT)."""

import sys

from torch.distributed.run import main

try:  # torchrun's internals, not its API: a torch without them keeps torchrun's own ending
    from torch.distributed.elastic.multiprocessing.api import SignalException
except ImportError:  # pragma: no cover - every torch the [train] extra admits has it
    SignalException = None

if SignalException is None:
    main()
else:
    try:
        main()
    except SignalException as exc:
        sys.exit(128 + int(exc.sigval))
