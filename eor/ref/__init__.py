"""Plain-torch (and numpy) references: the executable specification of every fast path.

Written for clarity, not speed. Every fast path in `eor.ops`, `kernels/`, `eor._core`,
`eor.dynamics`, `eor.agent` and `eor.data` is tested against these. One module per part of eor
it specifies: `ops`, `buffer`, `dynamics`, `agent`, `data`. Everything is re-exported here, so
`from eor.ref import critic_loss_ref` works.
"""

from eor.ref.agent import *  # noqa: F403
from eor.ref.buffer import *  # noqa: F403
from eor.ref.dynamics import *  # noqa: F403
from eor.ref.ops import *  # noqa: F403
