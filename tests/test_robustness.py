"Bad input gets a clear error or a documented fallback; property-based tests of the metadata encoder."
import warnings
import numpy as np, pandas as pd, pytest
from hypothesis import given, settings, HealthCheck, strategies as st
from hypothesis.extra.pandas import column, data_frames, range_indexes
from fastai.vision.all import *
from fastai_meta.all import *
from fastai_meta.encoding import MetaEncode
from fastai_meta.columns import category_keys
from conftest import meta_dls

def test_missing_image_names_row_and_file(synth, tmp_path):
    path, df = synth('meta', n=64)
    dls = meta_dls(path, df, 'meta', bs=8)
    bad = df.iloc[:2].copy()
    bad.loc[bad.index[1], 'fname'] = 'no_such_file.png'
    with pytest.raises(FileNotFoundError, match=r"row 1.*no_such_file\.png"): dls.test_dl(bad).one_batch()
    (tmp_path/'images').mkdir()
    (tmp_path/'images'/'broken.png').write_text('not an image')
    bad.loc[bad.index[1], 'fname'] = 'broken.png'
    dls2 = MetaDataLoaders.from_df(df, path, folder='images', fn_col='fname', label_col='label', cat_names=['site'], cont_names=['age'], bs=8, num_workers=0)
    with pytest.raises(FileNotFoundError, match='broken.png'): dls2.test_dl(bad.assign(fname=str(tmp_path/'images'/'broken.png'))).one_batch()

def test_strings_in_continuous_column_at_inference(synth):
    path, df = synth('meta', n=64)
    dls = meta_dls(path, df, 'meta', bs=8)
    bad = df.iloc[:3].astype({'age': object})
    bad.loc[bad.index[2], 'age'] = '40 years'
    with pytest.raises(ValueError, match=r"'age'.*row 2.*'40 years'"): dls.test_dl(bad).one_batch()

def test_booleans_given_as_strings(tmp_path):
    df = pd.DataFrame({'smoker': [True, False, None, True], 'flag': [1., 0., np.nan, 1.]})
    enc = MetaEncoding.fit(df, ['smoker'], ['flag'])
    x = enc.encode_df(pd.DataFrame({'smoker': ['true', ' FALSE', 'True', None], 'flag': ['true', 'False', None, 1]}))
    test_eq(x[:, 0], [2, 1, 2, 0])                     # 'true' is True, 'FALSE' is False
    test_eq(x[:, 1], [1, 1, 2, 1])                     # the continuous flag's gap is flagged
    test_close(x[[0, 3], 2], x[[3, 0], 2])             # 'true' and 1 encode alike

def test_all_missing_and_constant_columns_warn_and_stay_finite():
    df = pd.DataFrame({'c': ['a', 'b', 'a'], 'gone': [np.nan]*3, 'same': [5.]*3, 'nocat': [None]*3})
    with pytest.warns(UserWarning) as rec: enc = MetaEncoding.fit(df, ['c', 'nocat'], ['gone', 'same'])
    msgs = ' '.join(str(w.message) for w in rec)
    assert "'gone' is all missing" in msgs and "'same' is constant" in msgs and "'nocat'" in msgs
    x = enc.encode_df(pd.DataFrame({'c': ['a'], 'nocat': ['x'], 'gone': [3.], 'same': [50.]}))
    assert np.isfinite(x).all() and np.abs(x).max() < 100

def test_empty_duplicated_and_overlapping_columns(synth):
    with pytest.raises(ValueError, match='empty'): MetaEncoding.fit(pd.DataFrame({'a': []}), ['a'], [])
    dup = pd.DataFrame([[1, 2]], columns=['a', 'a'])
    with pytest.raises(ValueError, match='Duplicated'): MetaEncoding.fit(dup, ['a'], [])
    with pytest.raises(ValueError, match='both'): MetaBlock(['a'], ['a'])
    path, df = synth('meta', n=64)
    with pytest.raises(ValueError, match='table is empty'): meta_dls(path, df.iloc[:0], 'meta')

def test_label_with_gaps_is_refused(synth):
    path, df = synth('meta', n=64)
    bad = df.copy()
    bad.loc[7, 'label'] = None
    with pytest.raises(ValueError, match=r"'label'.*row 7"): meta_dls(path, bad, 'meta')

# Property-based tests of the encoder over random mixed-type frames
cat_values = st.one_of(st.none(), st.sampled_from(['a', 'b', ' c', 'true', 'False']), st.integers(-3, 3), st.booleans(), st.just(np.nan))
cont_values = st.one_of(st.none(), st.just(np.nan), st.floats(-1e6, 1e6), st.integers(-1000, 1000))

def test_infinite_values_are_refused():
    with pytest.raises(ValueError, match=r"'age'.*infinite.*row 1"): MetaEncoding.fit(pd.DataFrame({'age': [1., np.inf]}), [], ['age'])
frames = data_frames([column('c1', elements=cat_values, dtype=object), column('c2', elements=cat_values, dtype=object),
                      column('x1', elements=cont_values, dtype=object), column('x2', elements=cont_values, dtype=object)],
                     index=range_indexes(min_size=2, max_size=30))

def _canonical(v):
    "The vocabulary key `MetaEncoding` should give one cell (`category_keys`, whose rules are tested on known values in test_columns.py)."
    return category_keys(np.array([v], dtype=object))[0]

@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames, st.integers(1, 29))
def test_encoder_properties(df, n_train):
    n_train = min(n_train, len(df) - 1)
    train, valid = df.iloc[:n_train], df.iloc[n_train:]
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        enc, enc2 = MetaEncoding.fit(train, ['c1', 'c2'], ['x1', 'x2']), MetaEncoding.fit(train.copy(), ['c1', 'c2'], ['x1', 'x2'])
    x = enc.encode_df(df)
    # never crashes, always finite, deterministic
    assert x.shape == (len(df), 2 + 2 + 2) and np.isfinite(x).all()
    np.testing.assert_array_equal(x, enc2.encode_df(df))
    # train-only statistics: through a split `Datasets`, validation rows with values no training row has change nothing fitted
    odd = valid.assign(c1='only in validation', c2='only in validation', x1=1e9, x2=-1e9)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        dsets = Datasets(pd.concat([train, odd]), tfms=[[MetaEncode(['c1', 'c2'], ['x1', 'x2'], verbose=False)]],
                         splits=[list(range(n_train)), list(range(n_train, len(df)))])
    enc3 = dsets.tls[0].tfms.fs[0].encoding
    assert enc3.vocabs == enc.vocabs and enc3.fills == enc.fills and enc3.means == enc.means and enc3.stds == enc.stds
    # decode(encode) round-trips: categories to their canonical value (or #na# if missing/unseen), numbers to themselves
    for i,(_,row) in enumerate(df.iterrows()):
        dec = enc.decode(x[i])
        for c in ('c1', 'c2'):
            k = _canonical(row[c])
            assert dec[c] == (k if k in enc.vocabs[c] else '#na#')
        for j,c in enumerate(('x1', 'x2')):
            v = row[c]
            if v is None or pd.isna(v): assert dec[c].endswith('(missing)')
            else: assert float(dec[c]) == pytest.approx(float(v), rel=1e-3, abs=1e-3 * (1 + abs(enc.means[j]) + enc.stds[j]))
