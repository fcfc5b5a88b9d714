"""Online SAC in the gymnasium MuJoCo envs (`eor train-online`, docs/online.md): RAVL's learner
with eta = 0 and two critics, its own replay buffer with per-transition env steps, and a run
directory that `eor plot` reads and dataset recipes can reuse (policy snapshots, the buffer)."""

from eor.online.config import TrainOnlineConfig
from eor.online.replay import OnlineReplay, read_replay
from eor.online.trainer import OnlineTrainer, read_policies, train_online

__all__ = [
    "OnlineReplay",
    "OnlineTrainer",
    "TrainOnlineConfig",
    "read_policies",
    "read_replay",
    "train_online",
]
