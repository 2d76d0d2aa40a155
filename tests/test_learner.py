"meta_cnn_learner on data sets built so the answer is known: what only the metadata, or both inputs, reveal."
import subprocess, sys, time, unittest.mock
import numpy as np, pandas as pd, pytest
from fastai.vision.all import *
from fastai.tabular.all import tabular_learner, TabularDataLoaders, Categorify, FillMissing
from fastai_meta.all import *
from conftest import COLS, meta_dls, fit_quietly
from fastai_meta.columns import category_keys

def test_xor_label_is_not_in_the_metadata_alone(synth):
    "XOR of the image's tint and a boolean column: a tabular model on the metadata stays at chance. (That image+metadata learns it and image-only cannot is asserted where `fastai-meta demo` runs: nbs/04_cli.ipynb and the home page.)"
    path, df = synth('xor')
    set_seed(0, reproducible=True)
    tdls = TabularDataLoaders.from_df(df, path, cat_names=['flag'], cont_names=['noise'], y_names='label',
                                      procs=[Categorify, FillMissing, Normalize], valid_idx=list(range(320, 400)), bs=32, num_workers=0)
    tab_acc = fit_quietly(tabular_learner(tdls, metrics=accuracy), 8)[1]
    print(f'xor task: metadata only {tab_acc:.3f}')
    assert tab_acc <= 0.7                                    # chance 0.50 ± 0.06 on 80 rows (seen 0.61); image+metadata reaches 0.95 and above

def _points_dls(path, df, with_meta=True):
    kw = dict(get_y=point_getter, splitter=RandomSplitter(seed=0),
              batch_tfms=aug_transforms(do_flip=False, max_rotate=3, max_zoom=1.02, max_warp=0, max_lighting=0.1))
    blocks = (*TabularImageBlock('fname', *COLS['points'], pref=path/'images'), PointBlock) if with_meta else (ImageBlock, PointBlock)
    if not with_meta: kw['get_x'] = ColReader('fname', pref=path/'images')
    return DataLoaders.from_dblock(DataBlock(blocks=blocks, **kw), df, bs=32, num_workers=0)

def test_keypoints_placed_by_metadata(synth):
    "The point's quadrant and offset are in the metadata; points are augmented with their images (fastai's batch transforms): the error is far below the mean point's."
    path, df = synth('points')
    set_seed(0, reproducible=True)
    dls = _points_dls(path, df)
    meta_mse = fit_quietly(meta_cnn_learner(dls, 'resnet10t', pretrained=False, ps=0.1, meta_ps=0.1, y_range=(-1, 1)), 12)[0]   # timm's resnet10t: 2/3 of resnet18's time
    y = torch.cat([b[-1] for b in dls.valid]).view(-1, 2)
    baseline = ((y - y.mean(0))**2).mean().item()               # always the mean point (image-only models stay near it: keypoints tutorial)
    print(f'points task: MSE image+metadata {meta_mse:.4f}, mean point {baseline:.4f}')
    assert meta_mse < 0.3 * baseline                             # seen 0.10 x at 1 thread

def test_multilabel(synth):
    path, df = synth('meta')
    df = df.assign(tags=np.where(df.site.isin(['head', 'arm']), 'upper ', '') + np.where(df.age > 50, 'old', 'young'))
    dls = MetaDataLoaders.from_df(df, path, folder='images', fn_col='fname', label_col='tags', label_delim=' ',
                                  cat_names=['site'], cont_names=['age'], seed=0, bs=32, num_workers=0)
    set_seed(0, reproducible=True)
    learn = meta_cnn_learner(dls, 'resnet10t', pretrained=False, ps=0.1, meta_ps=0.1, metrics=accuracy_multi)
    acc = fit_quietly(learn, 6)[1]
    print(f'multi-label accuracy {acc:.3f}')
    assert acc >= 0.85
    test_eq(learn.model[3][-1].out_features, 3)

def test_regression(synth):
    path, df = synth('meta')
    df = df.assign(score=(df.age.fillna(50) - 50) / 30)
    dls = MetaDataLoaders.from_df(df, path, folder='images', fn_col='fname', label_col='score', y_block=RegressionBlock,
                                  cat_names=['site'], cont_names=['age'], seed=0, bs=32, num_workers=0, cache=ImageCache(16))  # noise images: small, decoded once
    set_seed(0, reproducible=True)
    mse = fit_quietly(meta_cnn_learner(dls, 'resnet10t', pretrained=False, ps=0.1, meta_ps=0.1, n_out=1), 8)[0]
    var = df.score.iloc[dls.splits[1]].var()
    print(f'regression MSE {mse:.4f} vs target variance {var:.4f}')
    assert mse < 0.3 * var

@pytest.fixture(scope='module')
def trained(synth):
    "A meta learner trained briefly on the xor task."
    path, df = synth('xor')
    set_seed(0, reproducible=True)
    learn = meta_cnn_learner(meta_dls(path, df, 'xor'), resnet18, pretrained=False, ps=0.1, meta_ps=0.1, metrics=accuracy)
    assert fit_quietly(learn, 8)[1] >= 0.9
    return learn, path, df

def test_predict_one_row(trained):
    learn, path, df = trained
    with learn.no_bar(): pred, idx, probs = learn.predict(df.iloc[0])
    assert pred in ('yes', 'no') and learn.dls.vocab[idx] == pred
    test_close(probs.sum().item(), 1.)

def test_test_dl_new_gaps_and_unseen_values(trained):
    learn, path, df = trained
    new = df.iloc[:8].drop(columns='label').copy()
    new['flag'] = ['maybe', None, True, False, 'True', 'False', np.nan, 'unknown']
    new['noise'] = [np.nan, 1, 2, np.nan, 0, 0, 0, 0]
    with learn.no_bar(): preds, _ = learn.get_preds(dl=learn.dls.test_dl(new))
    test_eq(preds.shape, (8, 2))
    assert torch.isfinite(preds).all()

def test_export_load_in_fresh_process(trained, tmp_path):
    learn, path, df = trained
    learn.export(tmp_path/'learn.pkl')
    rows = df.iloc[:16]
    rows.to_pickle(tmp_path/'rows.pkl')
    with learn.no_bar(): preds, _ = learn.get_preds(dl=learn.dls.test_dl(rows))
    script = f"""
import pandas as pd, torch, warnings; warnings.filterwarnings('ignore')
from fastai.learner import load_learner
learn = load_learner({str(tmp_path/'learn.pkl')!r})
rows = pd.read_pickle({str(tmp_path/'rows.pkl')!r})
with learn.no_bar(): preds, _ = learn.get_preds(dl=learn.dls.test_dl(rows)); pred = learn.predict(rows.iloc[0])[0]
torch.save(preds, {str(tmp_path/'preds.pt')!r}); print(pred)
"""
    out = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    test_eq(torch.load(tmp_path/'preds.pt'), preds)
    with learn.no_bar(): assert out.stdout.strip().splitlines()[-1] == learn.predict(rows.iloc[0])[0]

def test_two_learners_with_different_schemas(synth):
    (p1, d1), (p2, d2) = synth('meta'), synth('xor')
    l1 = meta_cnn_learner(meta_dls(p1, d1, 'meta'), resnet18, pretrained=False)
    l2 = meta_cnn_learner(meta_dls(p2, d2, 'xor'), resnet18, pretrained=False)
    test_ne(l1.model[1].embeds[0].num_embeddings, l2.model[1].embeds[0].num_embeddings)
    for l in (l1, l2):
        x = l.dls.one_batch()
        test_eq(l.model.eval()(*x[:2]).shape, (32, 2))

def test_freeze_keeps_metadata_branch_and_head_trainable(synth):
    path, df = synth('meta')
    learn = meta_cnn_learner(meta_dls(path, df, 'meta'), resnet18, pretrained=False)
    learn.freeze()
    model = learn.model
    assert not any(p.requires_grad for p in model[0][4].parameters() if p.ndim > 1)
    for part in model[1:]: assert all(p.requires_grad for p in part.parameters())
    n_grouped = sum(len(g) for g in learn.opt.param_lists)
    test_eq(n_grouped, len(list(model.parameters())))  # every parameter is in some group
    test_eq(len(learn.opt.param_lists), 3)              # resnet split: body, body, branch+fusion+head

def test_timm_arch_by_name_fine_tune_and_lr_find(synth):
    path, df = synth('xor', n=128)
    learn = meta_cnn_learner(meta_dls(path, df, 'xor'), 'resnet18', pretrained=False, metrics=accuracy)
    with learn.no_bar(), learn.no_logging():
        learn.fine_tune(1, 1e-3)
        sug = learn.lr_find(num_it=30, show_plot=False)
    assert sug.valley > 0
    assert isinstance(learn.model[0], TimmBody)
    test_eq(len(learn.opt.param_lists), 6)              # timm's groups of resnet18 (stem, 4 stages), then branch+fusion+head

def final_lrs(learn, **kwargs):
    "The learning rate of each parameter group at the end of `fine_tune(1, 1e-3, **kwargs)`."
    with learn.no_bar(), learn.no_logging(): learn.fine_tune(1, 1e-3, **kwargs)
    return [h['lr'] for h in learn.opt.hypers]

def test_fine_tune_trains_a_timm_body_at_the_heads_rate(synth):
    "A timm body: timm's layer groups, and `fine_tune` with no `lr_mult` trains them all at one rate; asked for, a slice spreads over them. torchvision: fastai's 100."
    path, df = synth('xor', n=64)
    dls = meta_dls(path, df, 'xor', bs=16)
    lite = meta_cnn_learner(dls, 'tf_efficientnet_lite0', pretrained=False)
    test_eq(len(lite.splitter(lite.model)), 9)                                 # stem, 6 stages, last conv; the rest
    lrs = final_lrs(lite)
    test_close(lrs, [lrs[-1]] * 9)                                             # lr_mult=1: one rate
    lrs = final_lrs(lite, lr_mult=100)
    test_close(lrs[-1] / lrs[0], 100, eps=1e-3); assert all(a < b for a,b in zip(lrs, lrs[1:]))   # spread over the body's depth
    lrs = final_lrs(meta_cnn_learner(dls, resnet18, pretrained=False))
    test_close(lrs[-1] / lrs[0], 100, eps=1e-3)                                # fastai's default kept

def test_pretrained_without_network_fails_fast(synth, tmp_path, monkeypatch):
    "Weights neither downloadable nor cached: one message that says what to pass, at once (torchvision's download failing; the hub in its own offline mode, an empty cache)."
    import huggingface_hub.constants as hfc
    monkeypatch.setattr(hfc, 'HF_HUB_OFFLINE', True); monkeypatch.setattr(hfc, 'HF_HUB_CACHE', str(tmp_path/'hub'))
    path, df = synth('xor', n=64)
    dls = meta_dls(path, df, 'xor')
    with unittest.mock.patch('torchvision.models._api.load_state_dict_from_url', side_effect=OSError('no network')):
        for arch in (resnet18, 'resnet18'):
            start = time.time()
            with pytest.raises(RuntimeError, match='pretrained=False.*HF_HUB_OFFLINE'): meta_cnn_learner(dls, arch)
            assert time.time() - start < 15
    torch.save(resnet18().state_dict(), tmp_path/'r18.pth')   # local weights work offline
    learn = meta_cnn_learner(dls, resnet18, weights_path=tmp_path/'r18.pth')
    assert learn.pretrained and not next(learn.model[0].parameters()).requires_grad

def test_show_results_and_interpretation(trained):
    learn, path, df = trained
    with learn.no_bar():
        learn.show_results(max_n=4)
        texts = [t.get_text() for ax in plt.gcf().axes for t in ax.texts]
        assert len(texts) == 4 and all('flag:' in t for t in texts)
        interp = ClassificationInterpretation.from_learner(learn)
        test_eq(interp.vocab, ['no', 'yes'])
        cm = interp.confusion_matrix()
        test_eq(cm.sum(), len(learn.dls.valid_ds))
        interp.plot_top_losses(3)
        assert sum(len(ax.texts) for ax in plt.gcf().axes) == 3
    plt.close('all')

def test_discriminative_lrs_and_mixed_precision(synth):
    path, df = synth('xor', n=128)
    learn = meta_cnn_learner(meta_dls(path, df, 'xor'), resnet18, pretrained=False).to_fp16()
    before = [p.detach().clone() for p in (learn.model[0][0].weight, learn.model[1].layers[0][0].weight)]
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(1, slice(1e-5, 1e-2))
    lrs = np.array([h['lr'] for h in learn.opt.hypers])           # body, body, metadata branch + fusion + head
    test_close(lrs / lrs[0], [1, 1000**0.5, 1000], eps=1e-6)
    for b,p in zip(before, (learn.model[0][0].weight, learn.model[1].layers[0][0].weight)): assert not torch.equal(b, p)

def test_cli_train_exports_a_learner(synth, tmp_path):
    from fastai_meta.cli import main
    path, df = synth('meta', n=64)
    df.to_csv(tmp_path/'data.csv', index=False)
    main(['train', str(tmp_path/'data.csv'), str(path/'images'), '--label', 'label', '--cat', 'site', '--cont', 'age',
          '--arch', 'resnet18', '--epochs', '1', '--size', '32', '--out', str(tmp_path/'m.pkl')])
    learn = load_learner(tmp_path/'m.pkl')
    with learn.no_bar(): assert learn.predict(df.iloc[0])[0] in ('yes', 'no')

def test_meta_importance_finds_the_informative_column(trained):
    learn, path, df = trained
    res = learn.meta_importance(n_repeats=2).set_index('feature')
    plt.close('all')
    print(res)
    with learn.no_bar(): test_close(res.base_score.iloc[0], learn.validate()[1])
    assert res.loc['flag', 'score_drop'] > 0.2 and abs(res.loc['noise', 'score_drop']) < 0.1
    assert res.loc['all metadata missing', 'score_drop'] > 0.2 and res.loc['no image', 'score_drop'] > 0.2

def price_dls(synth, **kw):
    "The 'meta' task with a price near 10,000 (spread about 2,000) that only the metadata (age) reveals."
    path, df = synth('meta')
    df = df.assign(price=10_000 + 2_000 * (df.age.fillna(50) - 50) / 17)
    return df, MetaDataLoaders.from_df(df, path, folder='images', fn_col='fname', label_col='price', y_block=RegressionBlock,
                                       cat_names=['site'], cont_names=['age'], seed=0, bs=32, num_workers=0, **kw)

def test_regression_far_from_zero_in_users_units(synth, tmp_path):
    "Targets near 10,000 are learned to a few percent with default arguments; the model starts at the mean and answers in the user's units, also after export."
    df, dls = price_dls(synth)
    set_seed(0, reproducible=True)
    learn = meta_cnn_learner(dls, 'resnet10t', pretrained=False, metrics=mae)     # timm's: a third of resnet18's time
    train_mean = float(df.price.iloc[dls.splits[0]].mean())
    with learn.no_bar(): p0 = learn.get_preds()[0]
    test_close(p0, torch.full_like(p0, train_mean), eps=1.)         # starts at the training mean, in the user's units
    err = fit_quietly(learn, 8, 3e-3)[1]
    print(f'MAE {err:.0f} ({err/100:.1f}% of 10,000); predicting the mean would be off by about 1,600')
    assert err < 600
    rows = df.iloc[dls.splits[1][:16]]
    with learn.no_bar(): preds = learn.get_preds(dl=learn.dls.test_dl(rows))[0]
    learn.export(tmp_path/'r.pkl')
    loaded = load_learner(tmp_path/'r.pkl', cpu=True)
    with loaded.no_bar():
        preds2 = loaded.get_preds(dl=loaded.dls.test_dl(rows))[0]
        one = loaded.predict(rows.iloc[0])[0][0]
    test_close(preds2, preds.cpu(), eps=0.5)
    test_close(one, preds2[0, 0], eps=0.5)
    assert (preds2[:, 0] - tensor(rows.price.values).float()).abs().mean() < 1_000   # the user's units
    traced = export_torchscript(learn, tmp_path/'r.pt')                            # TorchScript answers in them too
    x, m, _ = learn.dls.valid.one_batch()
    with torch.no_grad(): test_close(traced(x.as_subclass(Tensor), m.as_subclass(Tensor)), learn.model.eval()(x, m), eps=0.5)
    assert traced(x.as_subclass(Tensor), m.as_subclass(Tensor)).mean() > 5_000

def test_regression_y_range_in_users_units(synth):
    "`y_range` is in the user's units: outputs stay inside it, and the model still starts at the training mean."
    df, dls = price_dls(synth)
    learn = meta_cnn_learner(dls, resnet18, pretrained=False, y_range=(4_000, 16_000))
    with learn.no_bar(): p0 = learn.get_preds()[0]
    test_close(p0, torch.full_like(p0, float(df.price.iloc[dls.splits[0]].mean())), eps=5.)
    x, m, _ = dls.one_batch()
    for push, bound in ((1e4, 16_000), (-1e4, 4_000)):                  # saturate either way: still inside the range, at its edge
        learn.model[3][-1].bias.data.fill_(push)
        with torch.no_grad(): out = learn.model.eval()(x, m)
        assert out.min() >= 4_000 and out.max() <= 16_000 and (out - bound).abs().max() < 1, (push, out.min(), out.max())

def test_points_and_classification_heads_start(synth):
    "Keypoint heads start at the mean point (in fastai's [-1, 1] scale); classification heads are fastai's own."
    from fastai_meta.synth import point_getter
    path, df = synth('points')
    dblock = DataBlock(blocks=(*TabularImageBlock('fname', ['quadrant'], ['dx', 'dy'], pref=path/'images'), PointBlock),
                       get_y=point_getter, splitter=RandomSplitter(seed=0))
    dls = dblock.dataloaders(df, bs=32, num_workers=0)
    learn = meta_cnn_learner(dls, resnet18, pretrained=False, y_range=(-1, 1))
    x, m, y = dls.one_batch()
    with torch.no_grad(): out = learn.model.eval()(x, m)
    assert out.std(0).max() < 1e-4 and out.abs().max() < 0.5           # one point for every image, near the centre
    clf = meta_cnn_learner(meta_dls(*synth('xor'), 'xor'), resnet18, pretrained=False)
    assert 'out' not in clf.model._modules and clf.model[3][-1].bias is None and clf.model[3][-1].weight.abs().sum() > 0

def test_cli_predict_reports_bad_rows(synth, tmp_path):
    "`fastai-meta predict`: one row out per row in, each class's probability; an unreadable image and a bad value are reported by row, the rest predicted."
    from fastai_meta.cli import main
    path, df = synth('meta', n=64)
    df.to_csv(tmp_path/'data.csv', index=False)
    cli = [str(Path(sys.executable).parent/'fastai-meta')]                     # the console command itself
    names = df.assign(fname=df.fname.str.replace('.png', '', regex=False))       # file names without their extension
    names.to_csv(tmp_path/'names.csv', index=False)
    r = subprocess.run(cli + ['train', str(tmp_path/'names.csv'), str(path/'images'), '--suff', '.png', '--label', 'label',
                              '--group-col', 'fname', '--fusion', 'film', '--arch', 'resnet18', '--epochs', '1', '--size', '32',
                              '--out', str(tmp_path/'m.pkl')], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert 'balanced_accuracy' in r.stdout and 'exported to' in r.stdout             # fastai's progress table, the task's metrics
    new = names.drop(columns='label').iloc[:20].copy()
    new.loc[3, 'fname'] = 'missing'
    new = new.astype({'age': object}); new.loc[5, 'age'] = 'forty'
    new.to_csv(tmp_path/'new.csv', index=False)
    r = subprocess.run(cli + ['predict', str(tmp_path/'m.pkl'), str(tmp_path/'new.csv'), str(path/'images'), '--out', str(tmp_path/'p.csv')],
                       capture_output=True, text=True)
    assert r.returncode == 1 and '18 of 20 rows predicted; 2 not' in r.stdout, r.stdout + r.stderr[-2000:]   # failure is not success
    assert 'row 3 not predicted' in r.stderr and 'Traceback' not in r.stderr and len(r.stderr.splitlines()) < 10
    out = pd.read_csv(tmp_path/'p.csv')
    test_eq(len(out), 20); test_eq(list(out.row), list(range(20)))
    assert 'missing.png' in out.error[3] and "'forty'" in out.error[5] and out.error.drop([3, 5]).isna().all()
    good = out.drop([3, 5])
    assert good.prediction.isin(['yes', 'no']).all() and out.prediction[[3, 5]].isna().all()
    test_close(good[['p_no', 'p_yes']].sum(axis=1).values, np.ones(18), eps=1e-4)
    learn = load_learner(tmp_path/'m.pkl')
    with learn.no_bar(): test_eq(learn.predict(names.iloc[0])[0], good.prediction[0])

class SeenMeta(Callback):
    "The metadata batches the model sees, in training and in validation."
    order = 50
    def before_fit(self): self.seen = getattr(self, "seen", None) or {True: [], False: []}   # validate() fires before_fit too
    def before_batch(self): self.seen[self.training].append(self.xb[1].detach().clone())

def test_meta_dropout_shows_all_missing_rows_in_training_only(synth):
    "`meta_dropout=0.5`: about half the training rows arrive as a fully missing row encodes; validation rows are untouched."
    path, df = synth('xor')
    dls = meta_dls(path, df, 'xor')
    learn = meta_cnn_learner(dls, resnet18, pretrained=False, meta_dropout=0.5, cbs=SeenMeta())
    fit_quietly(learn, 1)
    enc = dls.meta.encoding
    blank = tensor(enc.encode_df(pd.DataFrame({c: [None] for c in enc.cat_names + enc.cont_names}))[0])
    train, valid = torch.cat(learn.seen_meta.seen[True]), torch.cat(learn.seen_meta.seen[False])
    share = (train == blank).all(1).float().mean().item()
    assert 0.35 < share < 0.65, share
    natural = (tensor(enc.encode_df(dls.valid.items)) == blank).all(1).float().mean().item()   # rows missing everything in the data
    test_close((valid == blank).all(1).float().mean().item(), natural)
    cb = MetaDropout(1., per_column=True); cb.learn = learn; cb.before_fit()
    learn.training, learn.xb = True, (None, valid[:8])
    cb.before_batch()
    test_eq(learn.xb[1], blank.expand(8, -1))

def test_meta_report_shows_the_group_it_fails(trained):
    "A validation set whose labels are flipped where `flag` is True: the report shows the model right for False, wrong for True, and counts every row."
    learn, path, df = trained
    rows = learn.dls.valid.items.copy()
    flag = pd.Series(category_keys(rows.flag.to_numpy()), index=rows.index)
    rows.loc[flag == 'True', 'label'] = rows.label[flag == 'True'].map({'yes': 'no', 'no': 'yes'})
    res = learn.meta_report(['flag', 'noise'], dl=learn.dls.test_dl(rows, with_labels=True), metrics=[accuracy])
    plt.close('all')
    print(res)
    r = res.set_index(['column', 'group'])
    assert r.loc[('flag', 'False'), 'accuracy'] > 0.8 and r.loc[('flag', 'True'), 'accuracy'] < 0.2
    test_eq(r.loc['flag', 'count'].sum(), len(rows)); test_eq(r.loc['noise', 'count'].sum(), len(rows))
    assert ('missing' in r.loc['flag'].index) == bool(flag.isna().any())

def test_meta_report_regression_per_group(synth):
    "For regression the report's MAE per site equals the MAE computed by hand on that site's rows."
    df, dls = price_dls(synth)
    learn = meta_cnn_learner(dls, resnet18, pretrained=False, metrics=mae)
    res = learn.meta_report('site').set_index(['column', 'group'])
    with learn.no_bar(): preds, targs = learn.get_preds()
    rows = dls.valid.items
    site = pd.Series(category_keys(rows.site.to_numpy()), index=rows.index).fillna('missing').to_numpy()
    for g in np.unique(site):
        i = np.flatnonzero(site == g)
        test_close(res.loc[('site', g), 'mae'], (preds[i, 0] - targs[i]).abs().mean().item(), eps=1e-2)

def test_precise_bn_holds_the_statistics_of_the_final_weights():
    "After `fit` with `PreciseBN`, a batchnorm's running mean and variance are those of the training data under the final weights (not a lagging average)."
    from fastai.test_utils import synth_dbunch
    set_seed(0, reproducible=True)
    dls = synth_dbunch(bs=16, n_train=8, n_valid=2)        # 128 training rows: 8 full batches
    model = nn.Sequential(nn.Linear(1, 8), nn.BatchNorm1d(8), nn.Linear(8, 1))
    model[0].forward = lambda x, lin=model[0]: nn.functional.linear(x.view(-1, 1), lin.weight, lin.bias)
    learn = Learner(dls, model, loss_func=lambda p, y: ((p.view(-1) - y.view(-1))**2).mean(), lr=0.3, cbs=PreciseBN())
    with learn.no_bar(), learn.no_logging(): learn.fit(2)
    with torch.no_grad(): h = torch.cat([model[0](b[0]) for b in dls.train.new(shuffle=False)])
    test_close(model[1].running_mean, h.mean(0), eps=1e-4)
    assert ((model[1].running_var / h.var(0)) - 1).abs().max() < 0.08     # an average of shuffled batches' variances (seen 3 % off)
    learn.remove_cb(PreciseBN)
    with learn.no_bar(), learn.no_logging(): learn.fit(1)           # lr 0.3: weights move; the plain running average now lags them
    with torch.no_grad(): h2 = torch.cat([model[0](b[0]) for b in dls.train.new(shuffle=False)])
    assert (model[1].running_mean - h2.mean(0)).abs().max() > 1e-3

def test_tta_augments_the_images_and_keeps_the_metadata(synth):
    "fastai's `learn.tta()` on a metadata learner: each pass sees other (augmented) images and the same metadata; the plain pass is `get_preds`'."
    path, df = synth('meta', n=64, size=16)
    dls = meta_dls(path, df, 'meta', bs=16, batch_tfms=aug_transforms(size=16, flip_vert=True, p_affine=1., p_lighting=1.))
    learn = meta_cnn_learner(dls, 'lcnet_050', pretrained=False, cbs=PreciseBN())
    fit_quietly(learn, 1)
    seen = []
    hook = learn.model.register_forward_pre_hook(lambda m, i: seen.append([t.detach().clone() for t in i]))
    with learn.no_bar(): (aug, plain), _ = learn.tta(n=3, beta=None)
    hook.remove()
    n = len(learn.dls.valid)
    test_eq(len(seen), 4 * n)                                           # 3 augmented passes, then the plain one
    first = [seen[k*n] for k in range(4)]
    assert all((a[0] - b[0]).abs().max() > 0.1 for a,b in zip(first, first[1:])), 'the images were not augmented'
    assert all(torch.equal(first[0][1], f[1]) for f in first), 'the metadata changed'
    with learn.no_bar(): test_close(plain, learn.get_preds()[0], eps=1e-5)
    test_close(aug.sum(1), 1, eps=1e-4)
