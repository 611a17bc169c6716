// Configuration metadata of the built-in data sets (the keys beside `dataset.name`).
#include "runner/core/registry.h"

namespace expctl {
namespace {

void add_common(ParamTable& t, int64_t crop_padding, bool hflip) {
  t.add_int("train_subset", 0, "use only this many training images (class-balanced; 0: all)").min(0);
  t.add_int("test_subset", 0, "use only this many test images (class-balanced; 0: all)").min(0);
  t.add_int("augment.crop_padding", crop_padding, "random crop after zero padding by this many pixels (0: off)")
      .min(0)
      .max(64);
  t.add_bool("augment.hflip", hflip, "random horizontal flip");
}

PluginInfo cifar10() {
  PluginInfo p;
  p.kind = "dataset";
  p.name = "CIFAR10";
  p.summary = "CIFAR-10, binary version: 50,000 train / 10,000 test 32x32 colour images, 10 classes";
  ParamTable& t = p.params;
  t.add_url("url", "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz", "the binary tarball");
  t.add_string("md5", "c32a1d4ab5d03f1284b67883e8d87530", "expected MD5 of the tarball");
  add_common(t, 4, true);
  p.unavailable = "data sets land with issue #3";
  return p;
}

PluginInfo fashion_mnist() {
  PluginInfo p;
  p.kind = "dataset";
  p.name = "FashionMNIST";
  p.summary = "Fashion-MNIST: 60,000 train / 10,000 test 28x28 grey images, 10 classes (gz IDX files)";
  ParamTable& t = p.params;
  t.add_url("url", "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
            "folder URL of the four .gz IDX files (Debian's copy: file:///usr/share/datasets/fashion-mnist/)");
  add_common(t, 2, false);
  p.unavailable = "data sets land with issue #3";
  return p;
}

}  // namespace

EXPCTL_REGISTER_PLUGIN(cifar10());
EXPCTL_REGISTER_PLUGIN(fashion_mnist());

}  // namespace expctl
