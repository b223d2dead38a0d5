"""exprengine: fast facial-expression editing with AU-conditioned attention generators.

    from exprengine import Engine, AUs
    eng = Engine.load("engines/cx6")
    out = eng.edit(images, AUs.parse("happiness@1.5"))     # uint8 NHWC in and out
    frames = eng.morph(image, "natural", "surprise", frames=24)
"""
__version__ = "0.1.0"

from exprengine.aus import AU_NAMES, PRESETS, AUPolicy, AUs  # noqa: E402
from exprengine.errors import EngineError, UserError  # noqa: E402


def __getattr__(name):
    # Engine pulls in the backends; import it lazily so `import exprengine` stays light.
    if name == "Engine":
        from exprengine.engine import Engine
        return Engine
    raise AttributeError(name)


__all__ = ["Engine", "AUs", "AUPolicy", "AU_NAMES", "PRESETS", "UserError", "EngineError", "__version__"]
