// The microphone's audio thread: float32 samples in, 20 ms blocks of mono s16le out (what
// /ws/audio takes), posted to the page with the block's peak level for the meter.

class MicCapture extends AudioWorkletProcessor {
  constructor(options) {
    super();
    this.size = options.processorOptions.blockSamples;
    this.block = new Int16Array(this.size);
    this.filled = 0;
    this.peak = 0;
  }

  process(inputs) {
    const channels = inputs[0];
    if (!channels || channels.length === 0) return true;
    const frames = channels[0].length;
    for (let i = 0; i < frames; i++) {
      // Mono: the mean of the channels (a stereo device gives two).
      let sample = 0;
      for (const channel of channels) sample += channel[i];
      sample = Math.max(-1, Math.min(1, sample / channels.length));
      this.peak = Math.max(this.peak, Math.abs(sample));
      this.block[this.filled++] = sample < 0 ? sample * 32768 : sample * 32767;
      if (this.filled === this.size) {
        // The buffer is handed over, not copied; a fresh one takes its place.
        this.port.postMessage({ pcm: this.block.buffer, peak: this.peak }, [this.block.buffer]);
        this.block = new Int16Array(this.size);
        this.filled = 0;
        this.peak = 0;
      }
    }
    return true; // keep running while the page holds the microphone
  }
}

registerProcessor("mic-capture", MicCapture);
