"""Video: reading, writing, and the frame-by-frame editing pipeline."""

#: libx264's speed presets, fastest first (`video --encoder-preset`, `io.VideoWriter`).
X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower",
                "veryslow", "placebo")
