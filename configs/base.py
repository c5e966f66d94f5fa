"""Every field of a vin_jax run, grouped. Variants (tiny, micro, paper) start from `base_config()`.

Units: `*_frames` in `chunking` are latent frames; `data.num_frames` and `data.fps` are pixel frames.
"""
import ml_collections


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0

  # The DiT that denoises one window (context + chunk) jointly with the global tokens.
  c.model = ml_collections.ConfigDict()
  c.model.width = 256
  c.model.depth = 8
  c.model.num_heads = 8
  c.model.mlp_ratio = 4.0
  c.model.patch_size = 2          # spatial patch on the latent grid
  c.model.temporal_patch = 1      # latent frames per token (STIV uses 2)
  c.model.window_mode = "chunked"  # "chunked" (VIN / no_global) or "full" (one window over the video)
  c.model.dtype = "float32"       # activations; softmax, norms and losses stay fp32
  c.model.rope_theta = 10000.0
  # Attention implementation: "auto" (cudnn on GPU, splash on TPU, einsum on CPU) | "einsum" (fp32 logits
  # for all queries) | "blocked" (query blocks, rematerialised: memory-efficient, same numbers) | "xla" |
  # "cudnn" (jax.nn.dot_product_attention) | "splash" (Pallas splash attention; interpreted, slowly, off TPU).
  # See vin_jax/model/layers.py and vin_jax/model/splash.py.
  c.model.attention = "auto"
  c.model.remat = "none"          # per block in the backward pass: "none" | "full" | "dots" (keep matmul outputs)
  c.model.scan_layers = False     # DiT blocks and VIN processor as one stacked module scanned over (one layer compiled)
  # STIV's micro-conditions: fps and resolution embeddings added to the timestep conditioning (beyond the VIN
  # paper; layers.MicroConditionEmbedder). The denoiser's `micro_BxK` [B, 3] (fps, height, width in pixels)
  # gives them per row; without it every row takes data.fps, data.height, data.width.
  c.model.micro_conditions = False
  # Self-attention layout of the DiT blocks: "joint" (the paper: all window tokens and the global tokens attend
  # to each other) | "factorised" (STIV's spatial-temporal layout, beyond the VIN paper: attention inside each
  # frame, with the global tokens, then along time at each position; vin_jax/model/factorised.py).
  c.model.attention_layout = "joint"
  # How the DiT treats the global tokens: "joint" (the paper's [X_t^i, Z_t]: processed with the window's tokens
  # in every block, outputs dropped) | "keys_values" (beyond the paper: only keys and values of the windows'
  # self-attention, never updated by the DiT; saves the global tokens' queries, text attention and MLP in every
  # window, ~G / (window tokens) of the DiT's linear FLOPs).
  c.model.global_tokens_in_dit = "joint"

  # The Video Interface Network: global tokens from keyframes of the noisy video.
  c.vin = ml_collections.ConfigDict()
  c.vin.enabled = True
  c.vin.num_global_tokens = 64
  c.vin.width = 256
  c.vin.num_heads = 8
  c.vin.processor_depth = 2
  c.vin.mlp_ratio = 4.0
  # Global-token dropout (beyond the paper): the fraction of training videos whose windows see no global tokens
  # (their keys masked), like text.drop_prob for text. It trains the unconditional branch that
  # sampling.global_guidance_scale extrapolates from, and the `no_global` sampling method's. 0: the paper.
  c.vin.drop_prob = 0.0

  c.chunking = ml_collections.ConfigDict()
  c.chunking.chunk_frames = 8               # F, latent frames per chunk
  c.chunking.context_frames = 4             # L in training
  c.chunking.inference_context_frames = 4   # L at sampling
  c.chunking.keyframe_seconds = 1.0         # T_s
  c.chunking.stop_gradient_context = True   # window i's own frames send no gradient into its context's keys/values
  # "recompute" (the paper): each window recomputes its L context frames through the DiT. "shared" (beyond
  # the paper): each window is its chunk alone, and every self-attention also reads the keys and values the
  # previous chunk's own tokens computed for its last L frames (vin_jax/model/local_context.py); each frame
  # then has one prediction, so it takes sampling.fusion="none".
  c.chunking.context_mode = "recompute"

  c.autoencoder = ml_collections.ConfigDict()
  c.autoencoder.kind = "patch"      # "patch": weight-free space-to-depth; "sd_vae": the SD VAE, frame by frame
  c.autoencoder.spatial_factor = 2
  c.autoencoder.temporal_factor = 1.0  # pixel frames per latent frame (1 for per-frame autoencoders)
  # latents = (autoencoder output - shift) * scale: zero mean, unit std (`precompute` measures both and
  # writes them to latent_stats.json; SD's VAE has scale 0.18215, shift 0).
  c.autoencoder.shift = 0.0
  c.autoencoder.scale = 1.0
  c.autoencoder.latent_channels = 0  # sd_vae: its latent channels (4); the patch autoencoder derives them
  c.autoencoder.weights = ""        # sd_vae: the directory `python -m vin_jax.main convert --kind=sd_vae` wrote
  c.autoencoder.frames_per_batch = 16  # sd_vae: frames encoded or decoded at once (bounds the memory)
  c.autoencoder.dtype = "float32"   # sd_vae: compute dtype ("bfloat16" halves it; parameters stay fp32)

  c.text = ml_collections.ConfigDict()
  # "bytes": byte tokenizer + small encoder; "t5": captions run through the converted T5 encoder at
  # text.t5_dir (frozen) as the batches are read; "precomputed": T5 embeddings stored by `precompute` (pods).
  # t5 and precomputed feed the same projection (text.precomputed_dim = T5's width).
  c.text.encoder = "bytes"
  c.text.t5_dir = ""                # t5, precomputed: `convert --kind=t5` output with its spiece.model (prompts)
  c.text.max_length = 64            # bytes; sprite captions take 46-119 (see vin_jax.data.sprites)
  c.text.width = 128
  c.text.depth = 2
  c.text.num_heads = 4
  c.text.precomputed_dim = 0        # width of precomputed embeddings when encoder == "precomputed"
  c.text.drop_prob = 0.1            # classifier-free guidance dropout in training

  c.diffusion = ml_collections.ConfigDict()
  c.diffusion.objective = "flow"    # "eps" | "v" | "flow"
  c.diffusion.schedule = "cosine"   # for eps / v: "cosine" | "linear"
  c.diffusion.t_sampling = "default"  # training t: "default" (logit-normal for flow, else uniform) | "uniform" | "logit_normal"
  c.diffusion.logit_normal_mean = 0.0
  c.diffusion.logit_normal_std = 1.0
  # What the network outputs: "target" (the objective's target, plus the input skip below) or "x0" (the
  # clean latents, turned into the objective's target by Schedule.target_from_x0; the loss is unchanged).
  c.diffusion.network_output = "target"
  c.diffusion.x0_min_sigma = 0.05   # "x0": sigma(t) is clamped here when the target is derived
  c.diffusion.input_skip = True     # "target": prediction = network + c_skip(t) * x_t (see Schedule.input_skip)
  c.diffusion.sigma_data = 1.0      # std of the (normalised) latents, for input_skip
  c.diffusion.context_loss_weight = 1.0
  c.diffusion.first_frame_cond_prob = 0.0   # STIV image conditioning: first latent frame given clean
  c.diffusion.first_frame_drop_prob = 0.08  # ... and that condition dropped with this probability
  c.diffusion.clean_context_prob = 0.0      # windows whose context is given clean (autoregressive training)
  # STIV's temporal upsampler (beyond the VIN paper): every clean_every-th latent frame given clean in training
  # (2: frame interpolation, `sample --interpolate`), dropped with first_frame_drop_prob; 0: off.
  c.diffusion.clean_every = 0
  # Per-chunk noise levels in training (beyond the VIN paper, after diffusion forcing): this fraction of the rows
  # draws its own t for every chunk instead of one t for the whole video, so cleaner chunks can inform noisier
  # ones through the global tokens (#18). 0: the paper's single t per video; sampling is unchanged.
  c.diffusion.per_chunk_t_prob = 0.0

  c.sampling = ml_collections.ConfigDict()
  c.sampling.num_steps = 50
  # The fps micro-condition to sample at (model.micro_conditions; 0: data.fps), e.g. data.fps / 2 for a model
  # trained with data.frame_strides=(1, 2) to move twice as far per frame.
  c.sampling.fps = 0.0
  # (height, width) in pixels to sample at, e.g. one of data.resolutions; with model.micro_conditions it is also
  # the resolution micro-condition. (): data.height x data.width.
  c.sampling.resolution = ()
  c.sampling.fusion = "early"       # "early" | "mid" | "late" | "none"
  c.sampling.t_alpha = 20           # steps s > t_alpha fuse under "early"; all presets fuse num_steps - t_alpha steps
  c.sampling.guidance_scale = 1.0
  # STIV's joint image-text guidance when frames are given (--image, --first_frame, --condition_video,
  # --interpolate): eps(-,-) + s_image (eps(I,-) - eps(-,-)) + guidance_scale (eps(I,T) - eps(I,-)). 1: the
  # image is always given and only the text is guided (two branches, as without given frames).
  c.sampling.image_guidance_scale = 1.0
  c.sampling.cfg_renorm = False
  # Guidance on the global tokens (beyond the paper), VIN sampling only: each window's prediction becomes
  # p(no tokens) + s (p(tokens) - p(no tokens)), text guidance applied inside each (4 branches with both), in one
  # batched call. 1: off (the paper). Meant for a model trained with vin.drop_prob > 0.
  c.sampling.global_guidance_scale = 1.0
  # ... applied on the first ceil(fraction * num_steps) steps only, where the layout and colours are decided (a
  # guidance interval, as Kynkaanniemi et al. 2024 do for text CFG; beyond the paper). 1: every step.
  c.sampling.global_guidance_fraction = 1.0
  c.sampling.num_chunks = 8
  c.sampling.num_samples = 2
  c.sampling.method = "vin"         # "vin" | "full" | "autoregressive" | "no_global" | "freenoise"
  c.sampling.use_ema = True
  c.sampling.prompt = ""            # empty: captions of the dataset's first examples
  c.sampling.freenoise_stride = 4   # latent frames between FreeNoise windows
  # Starting noise of the chunks: "independent" (the paper) or "rescheduled" (FreeNoise's: later chunks start
  # from permutations of chunk 0's noise frames; see sampler.initial_noise). The freenoise method always
  # reschedules.
  c.sampling.noise = "independent"

  c.data = ml_collections.ConfigDict()
  c.data.name = "sprites"
  c.data.video_dir = ""             # data.name == "video_folder": the folder of videos (+ optional .txt captions)
  # data.name == "video_folder": clips held out of train into the validation split (the prompts and first frames
  # of sample, evaluate and ablate), as whole videos from the end of the sorted listing so that no video is in
  # both splits. A small folder gives validation every video but the first, even if they hold fewer clips.
  c.data.validation_clips = 8
  # data.name == "video_folder": the data engine (vin_jax/data/engine.py; what it kept and dropped goes to
  # build_report.json next to the records).
  c.data.split_scenes = True        # clips within scenes (PySceneDetect's ContentDetector): none crosses a cut
  c.data.scene_threshold = 27.0     # ContentDetector's threshold (its default); lower finds more cuts
  # Drop clips whose mean optical-flow magnitude (Farneback, consecutive frames) is below this, in pixels per
  # frame at data.height x data.width; 0 keeps all.
  c.data.min_motion = 0.0
  # A .jsonl ({"path": ..., "caption": ...} per line) or .csv (header path,caption) index of captions, paths
  # relative to data.video_dir; wins over a video's sidecar .txt. Empty: sidecars only.
  c.data.captions_file = ""
  c.data.data_dir = ""              # empty: $TFDS_DATA_DIR, else WORKDIR/data
  c.data.num_examples = 256
  c.data.num_frames = 32            # pixel frames per stored video (>= the longest bucket)
  c.data.height = 16
  c.data.width = 16
  c.data.fps = 8.0
  # Frame-rate augmentation (STIV's mixed-fps training, beyond the VIN paper): each training row reads every
  # k-th frame of a k times longer crop, k drawn per row from this tuple, so it plays at data.fps / k. With
  # model.micro_conditions the row's fps micro-condition says so. (1,): every row at data.fps.
  c.data.frame_strides = (1,)
  # Mixed frame sizes (STIV's resolution micro-condition, beyond the VIN paper): ((height, width), ...) in pixels,
  # one drawn per training batch (uniformly; one compile each). The data set stays stored at data.height x
  # data.width, which also fixes the parameter shapes; each batch's frames are scaled to cover the drawn size and
  # centre-cropped. The DiT's RoPE takes any grid; the VIN's spatial position table is interpolated bilinearly.
  # With model.micro_conditions the row's (height, width) micro-condition is the drawn size. (): data.height x
  # data.width only.
  c.data.resolutions = ()
  c.data.num_sprites = 1
  c.data.sprite_size = 6
  c.data.max_speed = 0.5            # pixels per frame
  c.data.caption_detail = 0         # 0: count only; 1: + shapes; 2: + colours (nothing hidden)
  # Beyond the paper (#18): every sprite leaves the picture for this many consecutive pixel frames and comes
  # back unchanged, so identity must outlast the local context. 0: always visible.
  c.data.hide_frames = 0
  c.data.bucket_chunks = (1, 2, 4)
  c.data.bucket_weights = (1.0, 1.0, 1.0)
  c.data.batch_size = 8
  # Train on the latents and T5 embeddings that `python -m vin_jax.main precompute` wrote (no autoencoder or
  # text encoder runs while training).
  c.data.latents = False

  c.train = ml_collections.ConfigDict()
  c.train.steps = 1000
  c.train.learning_rate = 3e-4
  c.train.warmup_steps = 100
  c.train.optimizer = "adamw"       # "adamw" | "adafactor" (factored second moments, no first moment: STIV, v5e)
  c.train.weight_decay = 0.01
  c.train.grad_clip = 1.0
  c.train.ema_decay = 0.999
  c.train.log_every = 10
  c.train.checkpoint_every = 200
  c.train.keep_checkpoints = 2
  # MaskDiT/STIV masked training (beyond the VIN paper; vin_jax/model/masking.py): this fraction of each
  # window's tokens is dropped from the DiT in training (the VIN still sees the whole noisy video; the loss
  # scores the kept tokens only). STIV uses 0.5. Sampling never masks. Needs chunking.context_mode="recompute".
  c.train.mask_ratio = 0.0
  c.train.unmask_finetune_steps = 0   # with mask_ratio > 0: the last this-many steps train unmasked

  # `python -m vin_jax.main ablate` (see vin_jax/ablation.py for the rows).
  c.ablation = ml_collections.ConfigDict()
  c.ablation.rows = ""                  # comma-separated row names; empty: every row
  c.ablation.retrain_keyframes = True   # keyframe rows train their own model (False: sample the VIN model)
  c.ablation.pin_first_frame = False    # give every row the same clean first frame of a validation video

  c.mesh = ml_collections.ConfigDict()
  c.mesh.data = 1
  c.mesh.chunk = 1
  c.mesh.fsdp = 1
  return c


def get_config(arg=None):
  del arg
  return base_config()
