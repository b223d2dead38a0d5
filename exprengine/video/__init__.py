"""Video: reading and writing files (`io`), the frame-by-frame editing pipeline (`stream`), the
expression over time (`timeline`), and one file edited into another (`edit.edit_video`)."""

#: libx264's speed presets, fastest first (`video --encoder-preset`, `edit.edit_video`, `io.VideoWriter`).
X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower",
                "veryslow", "placebo")
