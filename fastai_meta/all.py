"Everything a user needs in one import: `from fastai_meta.all import *` (not exported from a notebook)."
from .columns import *
from .encoding import *
from .data import *
from .images import *
from .model import *
from .fusion import *
from .losses import *
from .speed import *
from .learner import *
from .interpret import *
from .calibrate import *
from .compare import *
from .context import *
from .synth import *
from .deploy import *
from .app import *
