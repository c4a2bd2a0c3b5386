"""mixer-zoo: token-mixing models in JAX/Flax, built by name from one registry.

    import jax, zoo
    model = zoo.create_model("mixer_b16_224", num_classes=10)
    variables = model.init(jax.random.key(0), images)          # images: [batch, 224, 224, 3]
    logits = model.apply(variables, images, train=False)        # [batch, 10]
"""

# Each family module registers its models on import.
from zoo import affnet, afno, ffnet, mambamixer, mlp_mixer, msmlp, ninformer, softs  # noqa: F401
from zoo.registry import (
    ModelInfo,
    Paper,
    PretrainedCfg,
    abstract_variables,
    count_params,
    create_model,
    dummy_inputs,
    get_entry,
    input_spec,
    list_models,
    model_info,
    pretrained_cfg,
    register_model,
)

__all__ = [
    "ModelInfo",
    "Paper",
    "PretrainedCfg",
    "abstract_variables",
    "count_params",
    "create_model",
    "dummy_inputs",
    "get_entry",
    "input_spec",
    "list_models",
    "model_info",
    "pretrained_cfg",
    "register_model",
]
