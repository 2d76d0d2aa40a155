"A real data set with real gaps: HAM10000 from ../shared (skipped where it is absent, as in a user's clone)."
from pathlib import Path
import numpy as np, pandas as pd, pytest
from fastai.vision.all import *
from fastai_meta.all import *

HAM = Path(__file__).resolve().parents[2]/'shared'/'data'/'ham10000'
pytestmark = pytest.mark.skipif(not (HAM/'metadata.csv').exists(), reason='../shared/data/ham10000 not present')

@pytest.fixture(scope='module')
def ham():
    df = pd.read_csv(HAM/'metadata.csv')
    lesions = df.lesion_id.drop_duplicates().sample(frac=0.2, random_state=0)
    df['is_valid'] = df.lesion_id.isin(lesions)          # split by lesion, never by image
    sub = pd.concat([df[df.age.isna()].head(20), df.dropna(subset=['age']).sample(280, random_state=0)])
    return df, sub

def test_ham10000_pipeline_and_training(ham):
    full, df = ham
    dls = MetaDataLoaders.from_df(df, HAM, folder='images', fn_col='image_id', suff='.jpg', label_col='dx', valid_col='is_valid',
                                  cat_names=['sex', 'localization'], cont_names=['age'], item_tfms=Resize(64), bs=32, num_workers=0)
    assert not set(full.lesion_id[full.is_valid]) & set(full.lesion_id[~full.is_valid])
    enc = dls.train_ds.tls[1].tfms[1].encoding
    assert 'back' in enc.vocabs['localization'] and enc.vocabs['sex'][0] == '#na#'
    gaps = dls.test_dl(df[df.age.isna()].head(4)).one_batch()[1]
    test_eq(gaps[:, 2].tolist(), [2]*4)                 # age_na flag set where age is blank
    learn = meta_cnn_learner(dls, resnet18, pretrained=False, metrics=accuracy)
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(1, 1e-3)
    with learn.no_bar(): pred, _, probs = learn.predict(df.iloc[0])
    assert pred in dls.vocab and len(probs) == dls.c
