"""What a user calls, in one import: `from fastai_meta.all import *`. Constants and helpers stay in their modules."""
from .sources import data_path, results_path
from .columns import infer_meta_columns, label_proxies, warn_leaks
from .encoding import TensorMeta, MetaEncoding
from .images import ImageCache
from .show import show_batch, show_results, plot_top_losses
from .data import MetaBlock, TabularImageBlock, ImageBlocks, several_images, MetaDataLoaders, GroupSplitter, group_folds
from .model import Fusion, ConcatFusion, MetaModel, ImagePool
from .fusion import fusions, FiLMFusion, MetaNetFusion, MetaBlockFusion, CSFFusion
from .body import image_body, offline_weights, timm_split
from .losses import ArcFaceLoss, SelfContrastive, WrappedLoss
from .speed import amp_rule
from .learner import meta_cnn_learner, create_meta_model, MetaLearner, PreciseBN, MetaDropout, fit_recipe, image_learner
from .interpret import subgroups, subgroup_report
from .trackers import tensorboard_log, wandb_process, MetaWandbCallback
from .calibrate import Temperature, fit_temperature, ExpectedCalibrationError, reliability, Calibration
from .calibrate import operating_point, OperatingPoint
from .crossfit import cross_fit, fold_learner, row_folds, out_of_fold, RunStore, RayRunner
from .scores import better, paired_stats, class_scores
from .context import patient_context, context_learner, ContextLearner, percentile_in_group, images_per_patient
from .stage_two import ensemble_selection
from .stack import stack_learner, StackLearner
from .predict import needed_columns, images_at
from .explain import MetaInterpretation, Faithfulness, Explanation, heatmap_grid
from .report import Comparison, CompareResult, RegressionResult
from .compare import meta_compare
from .synth import make_synthetic, point_getter, small_cnn
from .description import UnsafeFile
from .deploy import load_safe, encode_meta, export_torchscript, export_onnx
from .hub import from_pretrained, model_card, validation_metrics
from .forms import predict_form
from .app import meta_app, stack_app, context_app

__all__ = [n for n in dir() if not n.startswith('_')]
