"The metadata pipeline: fitting on the training split only, gaps, unseen values, clear errors, no attribute leaks."
import pickle
import numpy as np, pandas as pd, pytest
from fastai.vision.all import *
from fastai_meta.all import *
from conftest import meta_dls

def _encode(dls, rows):
    "Encode DataFrame rows through the metadata input's pipeline, as `test_dl` would."
    return torch.stack([dls.train_ds.tls[1].tfms(r) for _,r in rows.iterrows()])

def test_stats_come_from_training_split_only(synth):
    path, df = synth('meta')
    df = df.copy()
    dls0 = meta_dls(path, df, 'meta')
    valid = df.index[dls0.splits[1]]
    df.loc[valid, 'age'] = 1e6                       # poison the validation rows only
    df.loc[valid, 'site'] = 'valid_only_site'
    enc = meta_dls(path, df, 'meta').train_ds.tls[1].tfms[1].encoding
    train = df.iloc[dls0.splits[0]]
    assert enc.fills[0] == train.age.median() and enc.means[0] < 100
    assert 'valid_only_site' not in enc.vocabs['site']
    assert enc.vocabs['site'][0] == '#na#'

def test_gaps_and_unseen_categories(synth):
    path, df = synth('meta')
    dls = meta_dls(path, df, 'meta')
    enc = dls.train_ds.tls[1].tfms[1].encoding
    new = pd.DataFrame({'fname': df.fname[:3], 'site': ['elbow', None, 'head'], 'age': [np.nan, 40, 60],
                        'noise': [0.1, np.nan, 0.2], 'label': 'yes'})
    x = _encode(dls, new)
    # site codes: unseen and missing -> #na# (0); age_na flag: gap -> True (2); noise gap -> filled and flagged
    test_eq(x[:, 0].tolist(), [0, 0, enc.vocabs['site'].index('head')])
    test_eq(x[:, 1].tolist(), [2, 1, 1])
    test_eq(x[:, 2].tolist(), [1, 2, 1])
    test_close(x[0, 3].item(), (enc.fills[0] - enc.means[0]) / enc.stds[0], eps=1e-4)
    assert MetaRow(enc.decode(x[0].numpy()))['age'].endswith('(missing)')

def test_gap_at_inference_in_column_complete_in_training(tmp_path):
    df = make_synthetic(tmp_path, n=64, task='meta')
    df['age'] = df.age.fillna(40.)                   # no gaps in training
    dls = meta_dls(tmp_path, df, 'meta', bs=8)
    tdl = dls.test_dl(df.iloc[:4].assign(age=np.nan))  # fastai's FillMissing would assert here
    x = tdl.one_batch()[1]
    test_eq(x[:, 1].tolist(), [2]*4)

def test_no_attribute_leaks(synth):
    path, df = synth('meta')
    dls = meta_dls(path, df, 'meta')
    test_eq(dls.vocab, ['no', 'yes'])
    test_eq(dls.c, 2)
    assert isinstance(dls.loss_func, CrossEntropyLossFlat)
    learn = meta_cnn_learner(dls, resnet18, pretrained=True, weights_path=_local_r18(path))
    assert any(isinstance(t, Normalize) for t in dls.after_batch.fs)  # image normalisation still added

def _local_r18(path):
    fn = Path(path)/'r18.pth'
    if not fn.exists(): torch.save(resnet18().state_dict(), fn)
    return fn

def test_fitted_state_is_small_and_picklable(synth):
    path, df = synth('meta')
    tfm = meta_dls(path, df, 'meta').train_ds.tls[1].tfms[1]
    tfm(df.iloc[0])                                  # fills the per-layout position cache
    blob = pickle.dumps(tfm)
    assert len(blob) < 5_000, len(blob)
    assert b'fname' not in blob                      # no reference to the DataFrame
    tfm2 = pickle.loads(blob)
    test_eq(tfm2(df.iloc[0]), tfm(df.iloc[0]))

def test_both_block_spellings_agree(synth):
    path, df = synth('meta')
    a = DataBlock(blocks=(ImageBlock, MetaBlock(['site'], ['age', 'noise']), CategoryBlock),
                  get_x=[ColReader('fname', pref=path/'images'), noop], get_y=ColReader('label'),
                  splitter=RandomSplitter(seed=0)).dataloaders(df, bs=16, num_workers=0)
    b = DataBlock(blocks=(*TabularImageBlock('fname', ['site'], ['age', 'noise'], pref=path/'images'), CategoryBlock),
                  get_y=ColReader('label'), splitter=RandomSplitter(seed=0)).dataloaders(df, bs=16, num_workers=0)
    for x,y in zip(a.valid.one_batch(), b.valid.one_batch()): test_eq(x, y)

def test_booleans_and_mixed_spellings(tmp_path):
    df = make_synthetic(tmp_path, n=40, task='xor')
    enc = MetaEncoding.fit(df.assign(flag=df.flag.map({True: 'True', False: False, None: None})), ['flag'], ['noise'])
    test_eq(enc.vocabs['flag'], ['#na#', 'False', 'True'])

@pytest.mark.parametrize('bad, msg', [
    (dict(cat_names=['site'], cont_names=['site']), 'both'),
    (dict(cat_names=['site', 'site']), 'twice'),
    (dict(), 'cat_names'),
])
def test_bad_block_arguments(bad, msg):
    with pytest.raises(ValueError, match=msg): MetaBlock(**bad)

def test_errors_name_the_column(synth):
    path, df = synth('meta')
    with pytest.raises(KeyError, match='agee'):
        DataBlock(blocks=(ImageBlock, MetaBlock(['site'], ['agee']), CategoryBlock),
                  get_x=[ColReader('fname', pref=path/'images'), noop], get_y=ColReader('label')).dataloaders(df, num_workers=0)
    bad = df.copy().astype({'age': object})
    bad.loc[5, 'age'] = 'forty'
    with pytest.raises(ValueError, match=r"'age'.*row 5.*'forty'"): MetaEncoding.fit(bad, ['site'], ['age'])
    dls = meta_dls(path, df, 'meta')
    with pytest.raises(KeyError, match='noise'): dls.test_dl(df.drop(columns='noise').iloc[:2]).one_batch()

@pytest.mark.parametrize('task', ['meta', 'points'])
def test_show_batch_draws_metadata(synth, task):
    path, df = synth(task, n=64)
    if task == 'points':
        dls = DataLoaders.from_dblock(DataBlock(blocks=(*TabularImageBlock('fname', ['quadrant'], ['dx'], pref=path/'images'), PointBlock),
                                                get_y=point_getter, splitter=RandomSplitter(seed=0)), df, bs=8, num_workers=0)
    else: dls = meta_dls(path, df, 'meta', bs=8)
    dls.show_batch(max_n=4)
    texts = [t.get_text() for ax in plt.gcf().axes for t in ax.texts]
    assert len(texts) == 4 and all(('site:' if task == 'meta' else 'quadrant:') in t for t in texts)
    plt.close('all')

def test_multilabel_show_batch(synth):
    path, df = synth('meta', n=64)
    df = df.assign(tags=np.where(df.site.isin(['head', 'arm']), 'upper ', '') + np.where(df.age > 50, 'old', ''))
    dls = MetaDataLoaders.from_df(df, path, folder='images', fn_col='fname', label_col='tags', label_delim=' ',
                                  cat_names=['site'], cont_names=['age'], bs=8, num_workers=0)
    assert isinstance(dls.loss_func, BCEWithLogitsLossFlat)
    dls.show_batch(max_n=4)
    assert sum(len(ax.texts) for ax in plt.gcf().axes) == 4
    plt.close('all')
