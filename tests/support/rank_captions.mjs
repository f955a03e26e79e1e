// node rank_captions.mjs PARENT NAME IMAGE CAPTION...
// Loads the folder PARENT/NAME offline with transformers.js (onnx/model.onnx, tokenizer.json,
// preprocessor_config.json) and prints the image's logits for each caption as JSON.
import { env, AutoTokenizer, ChineseCLIPFeatureExtractor, ChineseCLIPModel, RawImage } from "@huggingface/transformers";

const [parent, name, imagePath, ...captions] = process.argv.slice(2);
env.allowRemoteModels = false;
env.allowLocalModels = true;
env.localModelPath = parent;
const model = await ChineseCLIPModel.from_pretrained(name, { dtype: "fp32" });
const tokenizer = await AutoTokenizer.from_pretrained(name);
// AutoProcessor knows the image processor only by its old name (ChineseCLIPFeatureExtractor), not by the
// ChineseCLIPImageProcessor transformers 5 writes; the class itself reads the folder's settings.
const processor = await ChineseCLIPFeatureExtractor.from_pretrained(name);
const text = tokenizer(captions, { padding: "max_length", max_length: 52, truncation: true });
const image = await processor(await RawImage.read(imagePath));
const { logits_per_image } = await model({ ...text, ...image });
console.log(JSON.stringify({ logits: Array.from(logits_per_image.data) }));
