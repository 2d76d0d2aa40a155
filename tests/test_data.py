"The metadata pipeline: fitting on the training split only, gaps, unseen values, clear errors, no attribute leaks."
import pickle, warnings
import numpy as np, pandas as pd, pytest
from fastai.vision.all import *
from fastai_meta.all import *
from fastai_meta.encoding import MetaRow
from fastai_meta.show import show_point
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
    # the metadata stays readable: drawn above any keypoint marker
    assert all(t.get_zorder() > c.get_zorder() for ax in plt.gcf().axes for t in ax.texts for c in ax.collections)
    if task == 'points': assert all(ax.collections for ax in plt.gcf().axes[:4])
    plt.close('all')

def test_metadata_moves_off_a_point():
    "A keypoint under the metadata's corner moves the metadata to the top of the image; one elsewhere leaves it."
    for (x, y), top in (((3, 45), True), ((40, 5), False)):                   # pixels of a 48-pixel image; y grows down
        ax = PILImage.create(np.zeros((48, 48, 3), dtype=np.uint8)).show()
        MetaRow(site='head', age=40, sex='female').show(ctx=ax)
        show_point(TensorPoint(tensor([[x, y]]).float(), img_size=(48, 48)), ax)
        assert (ax.texts[0].get_position()[1] > 0.5) == top and (ax.texts[0].get_va() == 'top') == top
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

def infer_frame(df):
    "The 'meta' rows with an id, file paths, a split column, a constant, an empty column and a recoded copy of the label."
    return df.assign(patient_id=[f'P{i:04d}' for i in range(len(df))], file=['images/' + f for f in df.fname],
                     is_valid=np.arange(len(df)) % 5 == 0, diagnosis=df.label.map({'yes': 'Y', 'no': 'N'}),
                     clinic='A', empty=np.nan, visits=np.arange(len(df)) % 4, age_days=df.age * 365.25)

def uncalled_dblock(path, get_y=ColReader('label'), meta=MetaBlock, splitter=ColSplitter('is_valid')):
    return DataBlock(blocks=(ImageBlock, meta, CategoryBlock), get_x=[ColReader('fname', pref=path/'images'), noop],
                     get_y=get_y, splitter=splitter, item_tfms=Resize(32))

def test_uncalled_metablock_infers_columns_safely(synth, capsys):
    "`blocks=(ImageBlock, MetaBlock, CategoryBlock)`: usable columns become metadata; what other blocks read, ids, paths, constants, empties and label copies do not; the choice is printed."
    path, df = synth('meta', n=100)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        dls = uncalled_dblock(path).dataloaders(infer_frame(df), bs=16, num_workers=0)
    enc = dls.meta.encoding
    test_eq(enc.cat_names, ['site', 'visits'])                 # text, and an integer of few values
    test_eq(enc.cont_names, ['age', 'noise', 'age_days'])        # floats
    test_eq(set(enc.left_out), {'fname', 'label', 'is_valid', 'patient_id', 'file', 'clinic', 'empty', 'diagnosis'})
    assert 'label' in enc.left_out['label'] and 'splitter' in enc.left_out['is_valid'] and 'id' in enc.left_out['patient_id']
    assert enc.left_out['file'] == 'file paths' and 'constant' in enc.left_out['clinic'] and 'missing' in enc.left_out['empty']
    assert enc.left_out['diagnosis'].startswith('gives the label away: the label \'label\' is a function of it')
    assert 'left_out' in repr(enc) and 'diagnosis' in repr(enc)
    assert not [o for o in w if 'Metadata column' in str(o.message)]   # what is left out is said, not warned about
    said = capsys.readouterr().out
    assert 'categorical: site, visits' in said and 'continuous:  age, noise, age_days' in said and 'diagnosis' in said and 'exclude=' in said
    test_eq(dls.one_batch()[1].shape[1], 2 + 3 + 3)                      # 2 categories, 3 _na flags, 3 continuous
    ex = uncalled_dblock(path, meta=MetaBlock(exclude=['noise', 'age_days'], verbose=False)).dataloaders(infer_frame(df), bs=16, num_workers=0).meta.encoding
    test_eq(ex.cat_names + ex.cont_names, ['site', 'visits', 'age'])
    assert ex.left_out['noise'] == 'excluded' and capsys.readouterr().out == ''

def test_explicitly_empty_names_are_an_error():
    "`MetaBlock(cat_names=[], cont_names=[])` names no column: an error, not a silent choice of every column."
    with pytest.raises(ValueError, match='no columns'): MetaBlock(cat_names=[], cont_names=[])
    with pytest.raises(ValueError, match='no columns'): MetaBlock(cat_names=[])

def test_uncalled_metablock_refuses_to_guess(synth):
    "A label read by a lambda (or any function of the row) cannot be kept out of the metadata: it refuses, asking for names."
    path, df = synth('meta', n=100)
    with pytest.raises(ValueError, match='cannot tell which columns block 2.*cat_names'):
        uncalled_dblock(path, get_y=lambda r: r['label']).dataloaders(infer_frame(df), bs=16, num_workers=0)
    named = uncalled_dblock(path, get_y=lambda r: r['label'], meta=MetaBlock(['site'], ['age']))   # names given: fine
    test_eq(named.dataloaders(df.assign(is_valid=False), bs=16, num_workers=0).meta.encoding.cat_names, ['site'])

def test_named_columns_that_copy_the_label_are_named(synth):
    "With names given too: a column equal to the label under another coding, or a monotone copy of a number, is warned about."
    path, df = synth('meta', n=100)
    with pytest.warns(UserWarning, match="'dx2': the label 'label' is a function of it"):
        uncalled_dblock(path, meta=MetaBlock(['site', 'dx2'], ['age']), splitter=RandomSplitter(seed=0)).dataloaders(
            df.assign(dx2=df.label.str.upper()), bs=16, num_workers=0)
    scored = df.assign(score=df.noise.fillna(0) * 3 + 1)
    copy = scored.assign(score_log=np.log(scored.score - scored.score.min() + 1))
    with pytest.warns(UserWarning, match="'score_log': a monotone copy of the label 'score'"):
        MetaDataLoaders.from_df(copy, path, folder='images', fn_col='fname', label_col='score', y_block=RegressionBlock,
                                cat_names=['site'], cont_names=['age', 'score_log'], seed=0, num_workers=0)
    with warnings.catch_warnings():
        warnings.simplefilter('error', UserWarning)          # honest columns: no warning
        MetaDataLoaders.from_df(df, path, folder='images', fn_col='fname', label_col='label', cat_names=['site'],
                                cont_names=['age', 'noise'], seed=0, num_workers=0)

def lesion_rows(seed=0):
    "Real-shaped groups: one lesion of 150 images, two of 80 and 40, 1,500 of 1 to 5 (most of 1); a rare class (2 %)."
    rng = np.random.default_rng(seed)
    sizes = np.r_[150, 80, 40, rng.choice([1, 1, 1, 2, 3, 5], 1500)]
    groups = np.repeat(np.arange(len(sizes)), sizes)
    return pd.DataFrame({'lesion_id': [f'L{g}' for g in groups], 'dx': rng.choice(['nv', 'mel', 'akiec'], len(groups), p=[.83, .15, .02])})

def sides_alike(rows, group_col, label, tr, va):
    "Validation over training: the share of rows, each label's rate, the share of rows from multi-image groups and from groups of 3+."
    size = rows[group_col].map(rows[group_col].value_counts())
    ratio = {f'rate of {c}': (rows[label].iloc[va] == c).mean() / (rows[label].iloc[tr] == c).mean() for c in rows[label].unique()}
    return dict(valid_share=len(va) / len(rows), multi=(size.iloc[va] > 1).mean() / (size.iloc[tr] > 1).mean(),
                three_plus=(size.iloc[va] > 2).mean() / (size.iloc[tr] > 2).mean(), **ratio)

@pytest.mark.parametrize('pct', [0.2, 0.3])
def test_group_splitter(pct):
    "No group on both sides; both sides alike in share, label rates (a rare class too) and group sizes; the same split for the same seed."
    rows = lesion_rows()
    for seed in range(3):
        tr, va = GroupSplitter('lesion_id', valid_pct=pct, seed=seed, stratify='dx')(rows)
        assert not set(rows.lesion_id.iloc[tr]) & set(rows.lesion_id.iloc[va])
        test_eq(sorted(list(tr) + list(va)), list(range(len(rows))))
        r = sides_alike(rows, 'lesion_id', 'dx', tr, va)
        assert abs(r['valid_share'] - pct) < 0.02, r
        assert all(abs(r[f'rate of {c}'] - 1) < 0.05 for c in ('nv', 'mel')) and abs(r['rate of akiec'] - 1) < 0.3, r
        assert abs(r['multi'] - 1) < 0.1 and abs(r['three_plus'] - 1) < 0.15, r
    test_eq(GroupSplitter('lesion_id', valid_pct=pct, seed=0, stratify='dx')(rows), GroupSplitter('lesion_id', valid_pct=pct, seed=0, stratify='dx')(rows))
    assert GroupSplitter('lesion_id', valid_pct=pct, seed=1, stratify='dx')(rows)[1] != tr
    folds = [GroupSplitter('lesion_id', seed=3, n_folds=3, fold=k, stratify='dx')(rows)[1] for k in range(3)]
    test_eq(sorted(sum(map(list, folds), [])), list(range(len(rows))))       # the folds partition the rows
    assert max(map(len, folds)) - min(map(len, folds)) < 0.03 * len(rows)

def test_group_splitter_without_stratify_keeps_group_sizes():
    "With no column to stratify on, the folds keep the groups' sizes alike: validation is not only single-image groups."
    rows = lesion_rows(1)
    tr, va = GroupSplitter('lesion_id', valid_pct=0.2, seed=0)(rows)
    r = sides_alike(rows, 'lesion_id', 'dx', tr, va)
    assert abs(r['multi'] - 1) < 0.1 and abs(r['valid_share'] - 0.2) < 0.05, r

REAL = [('ham10000/metadata.csv', 'lesion_id', 'dx'), ('siim-isic-2020-half/train.csv', 'patient_id', 'target')]

@pytest.mark.parametrize('table,group_col,label', REAL)
def test_group_splitter_on_real_tables(table, group_col, label):
    "On HAM10000 by lesion and SIIM-ISIC by patient, validation looks like training: label rates, multi-image share, group sizes within a few percent."
    f = Path(__file__).resolve().parents[2]/'shared'/'data'/table
    if not f.exists(): pytest.skip(f'needs ../shared/data/{table}')
    rows = pd.read_csv(f)
    tr, va = GroupSplitter(group_col, valid_pct=0.2, seed=0, stratify=label)(rows)
    assert not set(rows[group_col].iloc[tr]) & set(rows[group_col].iloc[va])
    r = sides_alike(rows, group_col, label, tr, va)
    size = rows[group_col].map(rows[group_col].value_counts())
    mean_size = size.iloc[va].mean() / size.iloc[tr].mean()
    rare = rows[label].value_counts().idxmin()
    assert abs(r['valid_share'] - 0.2) < 0.01 and abs(r['multi'] - 1) < 0.05 and abs(mean_size - 1) < 0.1, (r, mean_size)
    assert all(abs(v - 1) < (0.1 if k == f'rate of {rare}' else 0.05) for k,v in r.items() if k.startswith('rate')), r

def test_group_col_on_from_df(synth):
    "`group_col=` splits by group in `from_df`; the group column never becomes metadata; a missing group is an error naming the row."
    path, df = synth('meta', n=100)
    df = df.assign(patient=[f'P{i // 3}' for i in range(len(df))])
    dls = MetaDataLoaders.from_df(df, path, folder='images', fn_col='fname', label_col='label', group_col='patient', seed=0, num_workers=0)
    tr, va = dls.splits
    assert not set(df.patient.iloc[tr]) & set(df.patient.iloc[va]) and abs(len(va) / len(df) - 0.2) < 0.05
    test_eq(GroupSplitter('patient', seed=0, stratify='label')(df), (tr, va))     # stratified by the label
    enc = dls.meta.encoding
    assert 'patient' not in enc.cat_names + enc.cont_names and 'splitter' in enc.left_out['patient']
    bad = df.copy(); bad.loc[7, 'patient'] = None
    with pytest.raises(ValueError, match=r"'patient'.*row 7"):
        MetaDataLoaders.from_df(bad, path, folder='images', fn_col='fname', label_col='label', group_col='patient', num_workers=0)

REAL_CHOICE = [('ham10000/metadata.csv', 'image_id', 'dx', ['sex', 'localization'], ['age'], {'lesion_id': 'an id', 'dx_type': 'gives the label away'}),
               ('siim-isic-2020-half/train.csv', 'image_name', 'target', ['sex', 'anatom_site_general_challenge'], ['age_approx'],
                {'patient_id': 'an id', 'diagnosis': 'gives the label away', 'benign_malignant': 'gives the label away'})]

@pytest.mark.parametrize('table,fn_col,label,cats,conts,left', REAL_CHOICE)
def test_uncalled_metablock_on_real_tables(table, fn_col, label, cats, conts, left, capsys):
    "The real tables as downloaded, a random split, `blocks=(ImageBlock, MetaBlock, CategoryBlock)`: no id and no label proxy becomes metadata."
    f = Path(__file__).resolve().parents[2]/'shared'/'data'/table
    if not f.exists(): pytest.skip(f'needs ../shared/data/{table}')
    rows = pd.read_csv(f)
    for n in (400, len(rows)):                              # whatever the table's size
        dblock = DataBlock(blocks=(ImageBlock, MetaBlock, CategoryBlock), get_x=[ColReader(fn_col, pref=f.parent/'images', suff='.jpg'), noop],
                           get_y=ColReader(label), splitter=RandomSplitter(seed=0), item_tfms=Resize(32))
        with warnings.catch_warnings():
            warnings.simplefilter('error', UserWarning)       # what is left out is said, not warned about
            enc = dblock.dataloaders(rows.sample(n, random_state=0), bs=8, num_workers=0).meta.encoding
        test_eq(enc.cat_names, cats); test_eq(enc.cont_names, conts)
        assert all(enc.left_out[c].startswith(why) for c,why in left.items()), enc.left_out
        said = capsys.readouterr().out
        assert all(c in said for c in left), said

def test_from_df_takes_column_positions(tmp_path):
    "`fn_col` and `label_col` may be positions, as in fastai's `ImageDataLoaders.from_df` (its defaults, 0 and 1)."
    df = make_synthetic(tmp_path, n=40, task='meta', size=16)
    df = df[['fname', 'label', 'site', 'age']]
    dls = MetaDataLoaders.from_df(df, tmp_path, folder='images', cat_names=['site'], cont_names=['age'], bs=8, num_workers=0)
    test_eq(list(dls.vocab), ['no', 'yes'])
    x, meta, y = dls.one_batch()
    test_eq(x.shape[0], 8)
