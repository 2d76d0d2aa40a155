"""One process of `test_speed.py::test_seeded_training_repeats_across_processes`: trains the same seeded learner
with `to_fast`'s rule and with the other precision, one thread, and saves both models' weights."""
import sys, warnings
warnings.filterwarnings('ignore')
from fastai.vision.all import *
from fastai_meta.all import *

def train(path, df, amp):
    "A seeded `meta_cnn_learner` trained for two epochs with `to_fast(amp=amp)`: its weights and autocast dtype."
    set_seed(0, reproducible=True)
    dls = MetaDataLoaders.from_df(df, path, folder='images', fn_col='fname', label_col='label', cat_names=['flag'],
                                  cont_names=['noise'], seed=0, bs=16, num_workers=0)
    learn = meta_cnn_learner(dls, resnet18, pretrained=False, fast=False).to_fast(amp=amp)
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(2, 1e-2)
    return learn.model.state_dict(), str(learn.fast_training.amp_dtype)

if __name__ == '__main__':
    torch.set_num_threads(1)
    path, out = Path(sys.argv[1]), sys.argv[2]
    df = pd.read_pickle(path/'df.pkl')
    rule, dtype = train(path, df, 'auto')
    other, other_dtype = train(path, df, dtype == 'None')      # the rule chose float32: force bf16; it chose bf16: float32
    torch.save(dict(rule=rule, dtype=dtype, other=other, other_dtype=other_dtype), out)
