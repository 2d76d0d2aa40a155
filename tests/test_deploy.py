"The fused two-input model exports to TorchScript and ONNX and gives PyTorch's outputs on a batch with gaps."
import warnings
import numpy as np, pytest
from fastai.vision.all import *
from fastai_meta.all import *
from conftest import meta_dls

ort = pytest.importorskip('onnxruntime')

@pytest.mark.parametrize('kw', [dict(fusion='concat'), dict(fusion='csf'), dict(fusion='film', arcface=True)], ids=['concat', 'csf', 'film-arcface'])
def test_torchscript_and_onnx_match_pytorch(synth, tmp_path, kw):
    path, df = synth('meta', n=64)
    learn = meta_cnn_learner(meta_dls(path, df, 'meta', bs=8), resnet18, pretrained=False, **kw)
    new = df.iloc[:5].assign(site=[None, 'elbow', 'head', 'arm', np.nan], age=[np.nan, 30, np.nan, 70, 'NaN'], noise=[np.nan]*5)
    img, meta = (t.as_subclass(Tensor) for t in learn.dls.test_dl(new).one_batch())
    np.testing.assert_allclose(meta.numpy(), encode_meta(learn, new))
    with torch.no_grad(): ref = learn.model.eval()(img, meta).numpy()
    export_torchscript(learn, tmp_path/'m.pt')
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings('ignore', '`torch.jit.load` is deprecated', FutureWarning)   # the format we export, on purpose
        np.testing.assert_allclose(torch.jit.load(str(tmp_path/'m.pt'))(img, meta).numpy(), ref, atol=1e-4)
    export_onnx(learn, tmp_path/'m.onnx')
    out = ort.InferenceSession(str(tmp_path/'m.onnx')).run(None, {'image': img.numpy(), 'meta': meta.numpy()})[0]
    np.testing.assert_allclose(out, ref, atol=1e-4)
