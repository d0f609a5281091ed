"""Colorization pretraining (Zhang, Isola, Efros 2016) on coloured handwritten digits, labels
unused: the colorization row of the pretext-task comparison, with an encoder that the digit
classifiers of experiments/mim_transfer_digits.py (finetune, linear_probe) load.

`color_digits` (attn_jax/data/color_digits/) colours scikit-learn's 8x8 digits, each training
digit ten times: a background of uniform hue, the ink in the hue of its digit class (+-12
degrees), lightness L* = 25 + 60 g / 16 for the grayscale value g. Standardized with the training
digits' statistics (mean 43.35, standard deviation 22.59), L* is exactly the standardized
grayscale digit that sklearn_digits feeds its classifiers, so the probe sees the inputs
pretraining saw. The model predicts a*b* at every pixel from L* (L2 regression;
attn_jax/tasks/colorization.py) with a ViT encoder of exactly the masked-image-modeling shape
(patch 2, width 64, 4 blocks of 4 heads, MLP 128, MAE's fixed 2D sin-cos positions, a class token)
under "encoder", and SimMIM's linear per-patch head. Like the MIM runs it pretrains on the
training digits (here the ten colourings of the first 1,294 training digits, sklearn_digits'
train[:90%]: train[:12940], a whole number of digits, where a percent slice would cut one digit's
colourings; the best checkpoint is kept by the colour error on train[12940:], digits that training
never sees). With one colouring per digit the model
memorizes each training image's random background (train loss 0.001) and the held-out error
stops falling after a few hundred steps; ten colourings are what the data holds for that.

`--config.data.name=color_digits_random` colours the ink with hues independent of the digit: then
nothing in the targets depends on the class (a control: colour that follows the object is what
makes colorization teach recognition).

  python launch.py train --config experiments/colorization_digits.py \\
      --workdir runs/colorization_digits
  python launch.py train --config experiments/mim_transfer_digits.py:finetune \\
      --config.init_from=runs/colorization_digits --workdir runs/ft_colorization
  python launch.py train --config experiments/mim_transfer_digits.py:linear_probe \\
      --config.init_from=runs/colorization_digits --workdir runs/lp_colorization

Measured (2026-12-04, about 6 min on 2 CPU cores shared with other runs): test colour error 18.3
(validation 18.7; grey everywhere: 24.1) at step 3,000; in the README's pretext table: fine-tune
72.8 +- 1.0%, linear probe 72.3 +- 0.2% on 10% labels.
"""

import ml_collections

from experiments.colorization_digit_scenes import get_config as scenes_config


def get_config() -> ml_collections.ConfigDict:
    # The scenes experiment's task and head, on the digits, with the MIM encoders' shape.
    c = scenes_config()
    c.experiment = "colorization_digits"
    c.batch_size = 128
    c.total_steps = 3000  # 30 passes over the ten colourings of train[:90%]
    c.num_epochs = 0
    c.eval_batch_size = 512
    c.data.name = "color_digits"
    c.data.train_split = "train[:12940]"  # ten consecutive colourings per digit: 1,294 digits
    c.evals.validation.split = "train[12940:]"
    c.model.encoder.patch_size = 2
    # L* of the training digits: 25 + 60 * 0.30580668 and 60 * 0.37644229 (sklearn_digits'
    # statistics through L* = 25 + 60 g / 16; tests/data/test_color_digits.py recomputes them).
    c.task.lightness_mean = 43.3484
    c.task.lightness_std = 22.5865
    return c
