"""One process of the distributed test (launched by test_distributed.py through torchrun): trains a few batches
under fastai's `distrib_ctx`, records which (image, metadata) pairs it saw, and saves its weights."""
import sys, json, warnings
warnings.filterwarnings('ignore')
from fastai.vision.all import *
from fastai.distributed import *
from fastai_meta.all import *

class RecordPairs(Callback):
    "Record each training sample's image checksum and metadata row."
    order = 20
    def before_fit(self): self.seen = []
    def before_batch(self):
        if self.training:
            x, meta = self.xb[0], self.xb[1]
            self.seen += [(int(round(float(i.double().sum()*255))), m.tolist()) for i,m in zip(x.cpu(), meta.cpu())]

@patch
def _broadcast(self:DistributedDL, t, rank):
    "fastai broadcasts the shuffled indices through CUDA (NCCL); on this CPU-only test machine use gloo with CPU tensors."
    t = LongTensor(t)
    torch.distributed.broadcast(t, rank)
    return t.tolist()

path, out = Path(sys.argv[1]), Path(sys.argv[2])
df = pd.read_pickle(path/'df.pkl')
set_seed(0, reproducible=True)
dls = MetaDataLoaders.from_df(df, path, folder='images', fn_col='fname', label_col='label', cat_names=['site'],
                              cont_names=['age', 'noise'], seed=0, bs=8, num_workers=0, device='cpu')
truth = {int(np.asarray(x, dtype=np.int64).sum()): m.tolist() for x,m,_ in dls.train_ds}   # image checksum -> its metadata
learn = meta_cnn_learner(dls, resnet18, pretrained=False, cbs=RecordPairs())
init = {k: v.detach().clone() for k,v in learn.model.state_dict().items()}
with learn.distrib_ctx(sync_bn=False, cpu=True):
    learn.fit(1, 1e-3)
rec = learn.cbs.filter(lambda c: isinstance(c, RecordPairs))[0]
wrong = sum(not np.allclose(truth[k], m, atol=1e-5) for k,m in rec.seen)
rank = rank_distrib()
torch.save({k: v.cpu() for k,v in learn.model.state_dict().items()}, out/f'weights{rank}.pt')
torch.save(init, out/f'init{rank}.pt')
(out/f'seen{rank}.json').write_text(json.dumps(dict(n=len(rec.seen), wrong=wrong, n_train=len(dls.train_ds), keys=[k for k,_ in rec.seen])))
