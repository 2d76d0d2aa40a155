"Encoding: the fitted state of the metadata and the rows it encodes, checked against values computed by hand."
import numpy as np, pandas as pd, pytest
from fastai.vision.all import *
from fastai_meta.encoding import *

def _train():
    return pd.DataFrame({'site': ['arm', 'leg', 'arm', None], 'age': [20., 40., np.nan, 60.], 'smoker': [True, False, None, True]})

def test_fitted_state_by_hand():
    enc = MetaEncoding.fit(_train(), ['site', 'smoker'], ['age'])
    test_eq(enc.vocabs['site'], ['#na#', 'arm', 'leg']); test_eq(enc.vocabs['smoker'], ['#na#', 'False', 'True'])
    test_eq(enc.fills, [40.])                                     # the training median
    filled = np.array([20., 40., 40., 60.])
    test_close(enc.means, [40.]); test_close(enc.stds, [np.sqrt(200.)], eps=1e-9)   # the population std of the filled values
    test_eq(enc.cardinalities, [3, 3, 3])                         # site, smoker, and age's `_na` flag

def test_rows_encode_by_hand():
    enc = MetaEncoding.fit(_train(), ['site', 'smoker'], ['age'])
    x = enc.encode_df(pd.DataFrame({'site': ['leg', 'hand', None], 'smoker': ['false', True, None], 'age': [40., None, 100.]}))
    test_eq(x[:, 0], [2, 0, 0])                   # 'hand' was never seen: #na#, as a gap is
    test_eq(x[:, 1], [1, 2, 0])                   # 'false' is False
    test_eq(x[:, 2], [1, 2, 1])                   # age's flag: 2 where it was missing
    test_close(x[:, 3], [(40 - enc.means[0]) / enc.stds[0], (40 - enc.means[0]) / enc.stds[0], (100 - enc.means[0]) / enc.stds[0]], eps=1e-5)

def test_decode_names_the_values():
    enc = MetaEncoding.fit(_train(), ['site'], ['age'])
    dec = enc.decode(enc.encode_df(pd.DataFrame({'site': ['arm'], 'age': [None]}))[0])
    assert dec['site'] == 'arm' and dec['age'].endswith('(missing)')

def test_errors_name_the_column_and_row():
    enc = MetaEncoding.fit(_train(), ['site'], ['age'])
    with pytest.raises(ValueError, match=r"'age'.*row 'b'.*'old'"): enc.encode_df(pd.DataFrame({'site': ['arm', 'arm'], 'age': [1, 'old']}, index=['a', 'b']))
    with pytest.raises(KeyError, match="'site'"): enc.encode_df(pd.DataFrame({'age': [1.]}))

def test_meta_encode_is_fitted_on_training_rows_only():
    df = pd.concat([_train(), pd.DataFrame({'site': ['foot'], 'age': [1000.], 'smoker': [False]})], ignore_index=True)
    dsets = Datasets(df, tfms=[[MetaEncode(['site'], ['age'], verbose=False)]], splits=[[0, 1, 2, 3], [4]])
    enc = dsets.tls[0].tfms.fs[0].encoding
    assert 'foot' not in enc.vocabs['site'] and enc.fills == [40.]
    test_eq(dsets.valid[0][0][0], 0)                              # the validation row's unseen site is #na#
